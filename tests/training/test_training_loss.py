"""The training loss: the generic loop adds an architecture's own term through ``auxiliary_loss``, knowing no
architecture by name."""

from __future__ import annotations

import torch

from gctxseg.losses import DiceCELoss, training_loss
from gctxseg.models import create_model


def test_unet3_plus_classification_term_is_added_by_the_generic_training_loss():
    """UNet3+'s classification term belongs to the architecture (auxiliary_loss), not to the generic loop."""
    options = dict(width=0.0625, cgm=True, cgm_dropout_rate=0.0, deep_supervision=False)
    model = create_model("unet3_plus", 1, 3, **options).train()
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[0, 4:9, 4:9] = 1  # image 0 holds foreground, image 1 none
    outputs = model(torch.randn(2, 1, 32, 32))
    plain = DiceCELoss()(outputs, masks)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.last_cls_logit, torch.tensor([[1.0], [0.0]]))
    assert torch.allclose(training_loss(DiceCELoss(), model, outputs, masks), plain + bce)


class _WithOwnTerm(torch.nn.Module):
    """Any architecture with a training objective of its own: a term the loop cannot know about."""

    def __init__(self, term: float | None) -> None:
        super().__init__()
        self.term = term

    def auxiliary_loss(self, target: torch.Tensor) -> torch.Tensor | None:
        return None if self.term is None else torch.tensor(self.term) * target.float().mean()


def test_any_architectures_own_term_is_added_and_none_adds_nothing():
    outputs = torch.randn(2, 3, 8, 8)
    masks = torch.randint(0, 3, (2, 8, 8))
    plain = DiceCELoss()(outputs, masks)
    own = training_loss(DiceCELoss(), _WithOwnTerm(2.5), outputs, masks)
    assert torch.allclose(own, plain + 2.5 * masks.float().mean())
    assert torch.equal(training_loss(DiceCELoss(), _WithOwnTerm(None), outputs, masks), plain)
    assert torch.equal(training_loss(DiceCELoss(), torch.nn.Identity(), outputs, masks), plain)
