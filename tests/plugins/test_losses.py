"""The distillation losses: agreement with TRL's GKD loss, the endpoint and direction bugs others shipped,
bf16 stability, masking, temperature, reductions and the top-k variants."""

import os

import pytest
import torch
import torch.nn.functional as F

import stillroom
from stillroom import UserError

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

BETAS = [0.0, 0.1, 0.5, 0.9, 1.0]


def logits(*shape, scale=2.0, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale).to(dtype)


@pytest.fixture
def pair():
    student, teacher = logits(3, 7, 40, seed=1), logits(3, 7, 40, seed=2)
    labels = torch.randint(0, 40, (3, 7), generator=torch.Generator().manual_seed(3))
    labels[0, :3] = -100  # a prompt
    labels[2, 5:] = -100  # padding
    return student, teacher, labels


def loss(kind, **options):
    return stillroom.build("loss", kind, **options)


def reference_kl(p_logits, q_logits):
    """KL(p || q) per position in float64, written out from the definition."""
    p = torch.softmax(p_logits.double(), -1)
    return (p * (p.log() - torch.log_softmax(q_logits.double(), -1))).sum(-1)


def reference_gjsd(student_logits, teacher_logits, beta):
    """The GKD paper's generalized JSD in float64, mixing probabilities (not log-probabilities, TRL #2202)
    with the teacher weighted by beta (TRL PR #3043)."""
    s, t = torch.softmax(student_logits.double(), -1), torch.softmax(teacher_logits.double(), -1)
    m = beta * t + (1 - beta) * s
    return beta * (t * (t.log() - m.log())).sum(-1) + (1 - beta) * (s * (s.log() - m.log())).sum(-1)


def test_every_loss_is_registered(stillroom_host):
    kinds = set(stillroom_host.kinds("loss"))
    assert {"ce", "forward_kl", "reverse_kl", "gjsd", "tvd", "topk_forward_kl", "topk_reverse_kl",
            "topk_gjsd"} <= kinds


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("with_labels", [False, True])
def test_gjsd_matches_trl(stillroom_host, pair, beta, with_labels):
    from trl.experimental.gkd import GKDTrainer

    student, teacher, labels = pair
    labels = labels if with_labels else None
    ours = loss("gjsd", beta=beta)(student, teacher, labels)
    theirs = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=beta)
    assert abs(ours.item() - theirs.item()) <= 1e-6 * max(1.0, abs(theirs.item()))
    for reduction in ("sum", "batchmean"):
        ours = loss("gjsd", beta=beta, reduction=reduction)(student, teacher, labels)
        theirs = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=beta, reduction=reduction)
        assert abs(ours.item() - theirs.item()) <= 1e-6 * max(1.0, abs(theirs.item()))


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_gjsd_mixes_probabilities_with_teacher_weight_beta(stillroom_host, pair, beta):
    student, teacher, _ = pair
    expected = reference_gjsd(student, teacher, beta)
    values = loss("gjsd", beta=beta, reduction="none")(student, teacher)
    torch.testing.assert_close(values.double(), expected, atol=1e-5, rtol=1e-5)
    # mixing log-probabilities instead (the TRL #2202 bug) gives a clearly different value
    s, t = torch.log_softmax(student.double(), -1), torch.log_softmax(teacher.double(), -1)
    log_mix = beta * t + (1 - beta) * s
    wrong = beta * (t.exp() * (t - log_mix)).sum(-1) + (1 - beta) * (s.exp() * (s - log_mix)).sum(-1)
    assert (wrong - expected).abs().max() > 1e-2


def test_beta_direction(stillroom_host, pair):
    """Small beta means forward KL(teacher||student), large beta reverse KL (TRL PR #3043 swapped them)."""
    _, _, labels = pair
    student, teacher = logits(3, 7, 40, scale=2.0, seed=8), logits(3, 7, 40, scale=0.5, seed=9)
    forward = loss("forward_kl")(student, teacher, labels)
    reverse = loss("reverse_kl")(student, teacher, labels)
    # a peaked student and a flat teacher: the two directions differ by ~15%
    assert abs(forward.item() - reverse.item()) > 0.1 * forward.item()
    eps = 1e-4
    near_zero = loss("gjsd", beta=eps)(student, teacher, labels) / eps
    near_one = loss("gjsd", beta=1 - eps)(student, teacher, labels) / eps
    torch.testing.assert_close(near_zero, forward, rtol=1e-2, atol=0)
    torch.testing.assert_close(near_one, reverse, rtol=1e-2, atol=0)
    # swapping the roles of student and teacher maps beta to 1 - beta
    for beta in (0.2, 0.7):
        a = loss("gjsd", beta=beta)(student, teacher, labels)
        b = loss("gjsd", beta=1 - beta)(teacher, student, labels)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_beta_endpoints_are_exactly_forward_and_reverse_kl(stillroom_host, pair):
    student, teacher, labels = pair
    torch.testing.assert_close(loss("gjsd", beta=0.0)(student, teacher, labels),
                               loss("forward_kl")(student, teacher, labels), rtol=0, atol=0)
    torch.testing.assert_close(loss("gjsd", beta=1.0)(student, teacher, labels),
                               loss("reverse_kl")(student, teacher, labels), rtol=0, atol=0)
    per_position = loss("forward_kl", reduction="none")(student, teacher)
    torch.testing.assert_close(per_position.double(), reference_kl(teacher, student), atol=1e-5, rtol=1e-5)
    per_position = loss("reverse_kl", reduction="none")(student, teacher)
    torch.testing.assert_close(per_position.double(), reference_kl(student, teacher), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,options", [("gjsd", {"beta": b}) for b in BETAS]
                         + [("forward_kl", {}), ("reverse_kl", {}), ("tvd", {}), ("topk_gjsd", {"k": 8})])
def test_bf16_inputs_give_no_nan_and_no_negative_values(stillroom_host, kind, options):
    student = logits(4, 16, 300, scale=12.0, seed=5, dtype=torch.bfloat16)
    near = (student.float() + 0.01 * logits(4, 16, 300, seed=6)).to(torch.bfloat16)  # almost identical
    for teacher in (student.clone(), near, logits(4, 16, 300, scale=12.0, seed=7, dtype=torch.bfloat16)):
        values = loss(kind, reduction="none", **options)(student, teacher)
        assert values.dtype == torch.float32
        assert torch.isfinite(values).all()
        assert (values >= 0).all()
    identical = loss(kind, **options)(student, student.clone())
    assert identical.item() == pytest.approx(0.0, abs=1e-6)


def test_extreme_logits_give_no_nan(stillroom_host):
    student = torch.full((1, 2, 5), -1e4)
    student[..., 0] = 1e4
    teacher = torch.zeros(1, 2, 5)
    teacher[0, 0, 2] = float("-inf")  # a token the teacher forbids outright
    for beta in BETAS:
        value = loss("gjsd", beta=beta)(student.requires_grad_(), teacher)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(student.grad).all()
        student.grad = None


@pytest.mark.parametrize("kind,options", [("gjsd", {"beta": 0.5}), ("forward_kl", {}), ("reverse_kl", {}),
                                          ("tvd", {}), ("ce", {}), ("topk_forward_kl", {"k": 5}),
                                          ("topk_gjsd", {"k": 5, "tail": "renormalize"})])
def test_masked_positions_get_no_gradient(stillroom_host, pair, kind, options):
    student, teacher, labels = pair
    student = student.clone()
    student[0, 1] = float("nan")  # garbage at an ignored position must not leak
    student.requires_grad_()
    value = loss(kind, **options)(student, teacher, labels)
    value.backward()
    assert torch.isfinite(value)
    ignored = labels == -100
    assert (student.grad[ignored] == 0).all()
    assert student.grad[~ignored].abs().sum(-1).gt(0).all()


def test_reductions(stillroom_host, pair):
    student, teacher, labels = pair
    per_position = loss("gjsd", reduction="none")(student, teacher, labels)
    assert per_position.shape == labels.shape and (per_position[labels == -100] == 0).all()
    counted = (labels != -100).sum()
    total = per_position.sum()
    torch.testing.assert_close(loss("gjsd", reduction="sum")(student, teacher, labels), total)
    torch.testing.assert_close(loss("gjsd")(student, teacher, labels), total / counted)
    torch.testing.assert_close(loss("gjsd", reduction="mean")(student, teacher, labels), total / counted)
    unmasked = loss("gjsd", reduction="none")(student, teacher)
    torch.testing.assert_close(loss("gjsd")(student, teacher), unmasked.sum() / student.shape[0])
    torch.testing.assert_close(loss("gjsd", reduction="mean")(student, teacher), unmasked.mean())
    # gradient accumulation: the trainer's token count replaces the denominator
    torch.testing.assert_close(loss("gjsd")(student, teacher, labels, num_items_in_batch=counted * 2),
                               total / (counted * 2))
    everything_ignored = torch.full_like(labels, -100)
    assert loss("gjsd")(student, teacher, everything_ignored).item() == 0.0


def test_temperature_divides_both_logits(stillroom_host, pair):
    student, teacher, labels = pair
    for kind in ("gjsd", "forward_kl", "reverse_kl", "tvd"):
        hot = loss(kind, temperature=2.0)(student, teacher, labels)
        torch.testing.assert_close(hot, loss(kind)(student / 2.0, teacher / 2.0, labels))
    # a high temperature flattens both distributions, so they move closer together
    assert loss("forward_kl", temperature=4.0)(student, teacher).item() < loss("forward_kl")(student, teacher).item()
    ce_hot = loss("ce", temperature=2.0)(student, teacher, labels)
    torch.testing.assert_close(ce_hot, loss("ce")(student / 2.0, None, labels))


def test_every_loss_declares_the_temperature_it_divides_by(stillroom_host, pair):
    student, teacher, labels = pair
    for kind in ("ce", "forward_kl", "reverse_kl", "gjsd", "tvd", "topk_forward_kl", "topk_reverse_kl", "topk_gjsd"):
        options = {"tail": "renormalize"} if kind.startswith("topk_") else {}
        assert loss(kind, **options).temperature == 1.0, kind
        assert loss(kind, temperature=3.0, **options).temperature == 3.0, kind

    class Unscaled(stillroom.Loss):
        """A loss without a temperature: the role's declared default."""

        name = "unscaled"

        def __call__(self, student_logits, teacher_logits=None, labels=None):
            return student_logits.sum()

    assert Unscaled().temperature == 1.0


def test_cross_entropy_ignores_the_teacher_and_matches_torch(stillroom_host, pair):
    student, teacher, labels = pair
    expected = F.cross_entropy(student.reshape(-1, 40), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss("ce")(student, teacher, labels), expected)
    torch.testing.assert_close(loss("ce")(student, None, labels), expected)
    with pytest.raises(UserError, match="needs labels"):
        loss("ce")(student, teacher)


def test_total_variation_is_half_l1(stillroom_host, pair):
    student, teacher, _ = pair
    expected = 0.5 * (torch.softmax(student, -1) - torch.softmax(teacher, -1)).abs().sum(-1)
    torch.testing.assert_close(loss("tvd", reduction="none")(student, teacher), expected)
    assert (expected <= 1).all()


def test_mismatched_shapes_are_user_errors(stillroom_host, pair):
    student, teacher, labels = pair
    with pytest.raises(UserError, match="cross_tokenizer"):
        loss("gjsd")(student, teacher[..., :30])
    with pytest.raises(UserError, match="labels must have shape"):
        loss("forward_kl")(student, teacher, labels[:, 1:])
    with pytest.raises(UserError, match="topk_"):
        loss("forward_kl")(student, (teacher.topk(3).indices, teacher.topk(3).values))


@pytest.mark.parametrize("kind,dense", [("topk_forward_kl", "forward_kl"), ("topk_reverse_kl", "reverse_kl"),
                                        ("topk_gjsd", "gjsd")])
@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_topk_approaches_the_full_divergence_as_k_grows(stillroom_host, pair, kind, dense, tail):
    student, teacher, labels = pair
    full = loss(dense)(student, teacher, labels).item()
    errors = []
    for k in (2, 8, 20, 36, 40):
        value = loss(kind, k=k, tail=tail)(student, teacher, labels).item()
        assert value >= 0
        if tail == "bucket" and kind != "topk_gjsd":  # merging categories can only lower a KL
            assert value <= full + 1e-5
        errors.append(abs(value - full))
    assert errors[-1] <= 1e-5 * max(1.0, full)
    assert errors[-2] < errors[0]


def test_topk_from_stored_indices_and_logprobs(stillroom_host, pair):
    """The compact form (int32 indices, float16 log-probs) gives the same loss as full logits, up to fp16."""
    student, teacher, labels = pair
    forward = loss("topk_forward_kl", k=20)
    indices, logprobs = forward.teacher_topk(teacher)
    assert indices.dtype == torch.int32 and indices.shape == (3, 7, 20)
    from_logits = forward(student, teacher, labels)
    from_pairs = forward(student, (indices, logprobs.half()), labels)
    from_mapping = forward(student, {"indices": indices, "logprobs": logprobs}, labels)
    torch.testing.assert_close(from_pairs, from_logits, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(from_mapping, from_logits, rtol=1e-4, atol=1e-5)
    # k smaller than the stored columns keeps the k most likely
    torch.testing.assert_close(loss("topk_forward_kl", k=5)(student, (indices, logprobs), labels),
                               loss("topk_forward_kl", k=5)(student, teacher, labels), rtol=1e-4, atol=1e-5)


def test_topk_padding_and_positions_without_teacher(stillroom_host, pair):
    student, teacher, labels = pair
    forward = loss("topk_forward_kl", k=6, reduction="none")
    indices, logprobs = forward.teacher_topk(teacher)
    padded_indices, padded_logprobs = indices.clone(), logprobs.clone()
    padded_indices[:, :, 4:] = -1  # the teacher returned only 4 alternatives
    padded_logprobs[:, :, 4:] = float("-inf")
    four = loss("topk_forward_kl", k=4, reduction="none")(student, (indices, logprobs))
    torch.testing.assert_close(forward(student, (padded_indices, padded_logprobs)), four)
    padded_indices[1, 2] = -1  # no alternative at all at one position: it is ignored
    values = forward(student.requires_grad_(), (padded_indices, padded_logprobs))
    assert values[1, 2] == 0 and torch.isfinite(values).all()
    values.sum().backward()
    assert (student.grad[1, 2] == 0).all() and torch.isfinite(student.grad).all()


def test_topk_options_are_validated(stillroom_host, pair):
    student, teacher, _ = pair
    with pytest.raises(UserError, match="renormalize"):
        loss("topk_forward_kl", temperature=2.0)
    hot = loss("topk_forward_kl", temperature=2.0, tail="renormalize", k=40)
    torch.testing.assert_close(hot(student, teacher), loss("forward_kl", temperature=2.0)(student, teacher),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="outside the student's vocabulary"):
        loss("topk_forward_kl")(student, (torch.full((3, 7, 2), 99), torch.zeros(3, 7, 2)))
