"""Every task head trains with `Trainer` exactly as with a plain loop, gradient accumulation included."""

import pytest
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from helpers import tiny_audio_config, tiny_video_config, tiny_vision_config
from omni_encoders import (
    OmniAudioForAudioClassification,
    OmniAudioForCTC,
    OmniVideoForVideoClassification,
    OmniVisionForImageClassification,
)


class _ListDataset(Dataset):
    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        return self.examples[index]


def _examples(task: str, n: int = 4):
    generator = torch.Generator().manual_seed(0)
    if task == "image":
        return [{"pixel_values": torch.randn(3, 28, 28, generator=generator), "labels": i % 3} for i in range(n)]
    if task == "video":
        return [{"pixel_values_videos": torch.randn(2, 3, 28, 28, generator=generator), "labels": i % 3} for i in range(n)]
    if task == "audio":
        return [{"input_values": torch.randn(640, generator=generator), "labels": i % 3} for i in range(n)]
    return [
        {"input_values": torch.randn(1280, generator=generator), "labels": torch.tensor([5 + i, 7, 9])}
        for i in range(n)
    ]


def _model(task: str):
    torch.manual_seed(0)
    if task == "image":
        return OmniVisionForImageClassification(tiny_vision_config(num_labels=3))
    if task == "video":
        # The load-balancing loss is a product of batch statistics, so it differs between micro-batches and the whole
        # batch by construction; without it the video loss must accumulate exactly.
        return OmniVideoForVideoClassification(tiny_video_config(num_labels=3, router_aux_loss_coef=0.0))
    if task == "audio":
        return OmniAudioForAudioClassification(tiny_audio_config(num_labels=3))
    return OmniAudioForCTC(tiny_audio_config(vocab_size=12))


def _train(task: str, batch_size: int, accumulation: int, tmp_path) -> dict:
    model = _model(task)
    args = TrainingArguments(
        output_dir=str(tmp_path / f"{task}-{batch_size}-{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # unlike Adam, SGD sees a wrongly scaled gradient
    trainer = Trainer(model=model, args=args, train_dataset=_ListDataset(_examples(task)), optimizers=(optimizer, None))
    train_loss = trainer.train().training_loss
    return train_loss, {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("task", ["image", "video", "audio", "ctc"])
def test_gradient_accumulation_matches_one_large_batch(task, tmp_path):
    """One step on 4 examples equals 2 accumulated micro-batches of 2 (weights and the logged loss): the loss is scaled
    correctly for accumulation."""
    initial = {name: p.detach().clone() for name, p in _model(task).named_parameters()}
    large_loss, large = _train(task, batch_size=4, accumulation=1, tmp_path=tmp_path)
    accumulated_loss, accumulated = _train(task, batch_size=2, accumulation=2, tmp_path=tmp_path)
    assert accumulated_loss == pytest.approx(large_loss, rel=1e-4)
    moved = max((large[name] - initial[name]).abs().max().item() for name in large)
    assert moved > 1e-4
    for name in large:
        assert torch.allclose(large[name], accumulated[name], atol=1e-5, rtol=1e-4), name
