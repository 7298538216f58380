"""gkd_rl: on-policy distillation mixed with a reward (the GKD paper's RLAIF setting) on TRL's GRPO trainer."""

from stillroom import hookimpl


@hookimpl(trylast=True)
def stillroom_register_methods(register):
    from stillroom.plugins.gkd_rl.method import GKDRL

    register(GKDRL)
