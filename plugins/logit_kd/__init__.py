"""Word-level KD from teacher signals captured once (the ``logit_kd`` method) and ``stillroom capture``."""

from stillroom import hookimpl


@hookimpl
def stillroom_register_methods(register):
    from stillroom.plugins.logit_kd.method import LogitKD

    register(LogitKD)


@hookimpl
def stillroom_register_commands(cli):
    from stillroom.plugins.logit_kd.capture_command import capture

    cli.command("capture")(capture)
