# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""The mapping engine every converter uses: read a checkpoint, map its tensors onto a model by rules, report.

A layout is a tuple of [`Component`]s: each takes the source tensors under a prefix (e.g. `vision_encoder.`), maps
them by its [`Rule`]s (regular expressions over the key, a target key template, optional reshaping and splitting of
fused tensors) and places them under a prefix of the target model. [`convert_state_dict`] applies a layout and
returns the target tensors with a [`ConversionReport`] naming what was mapped, what was dropped (and why) and which
parameters of the model were not in the source (newly initialised). A tensor that lands on a parameter of another
shape stops the conversion with a `ValueError` that lists every mismatch. [`save_converted`] writes the result as a
`save_pretrained` folder with `conversion_report.json` and a model card.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Keys under which training scripts commonly wrap a state dict (with optimizer states etc. beside it).
STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model", "module", "ema")


# ------------------------------------------------------------------------------------------------ reading checkpoints


def resolve_checkpoint(source: str | os.PathLike, **hub_kwargs) -> Path:
    """A local path for `source`: the path itself, or a snapshot of the Hub repo `source` (its JSON files and
    safetensors weights, or its pickled weights when it has no safetensors)."""
    path = Path(source)
    if path.exists():
        return path
    text = str(source)
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1
    if looks_local or path.suffix in (".safetensors", *PICKLE_SUFFIXES):
        raise FileNotFoundError(f"{text}: no such file or folder (and not a Hub repo id of the form 'org/name').")
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors"], **hub_kwargs))
    if not any(folder.glob("*.safetensors")):
        patterns = ["*.json", *(f"*{suffix}" for suffix in PICKLE_SUFFIXES)]
        folder = Path(snapshot_download(str(source), allow_patterns=patterns, **hub_kwargs))
    return folder


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, torch.Tensor):
            flat[prefix + str(key)] = value
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _unwrap(loaded, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a pickled object: the object itself, or one wrapped by a training script."""
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict.")
    if not any(isinstance(value, torch.Tensor) for value in loaded.values()):
        for key in STATE_DICT_WRAPPERS:
            if isinstance(loaded.get(key), Mapping):
                return _unwrap(loaded[key], path)
    state_dict = _flatten(loaded)
    if not state_dict:
        raise ValueError(f"No tensors found in {path} (top-level keys: {sorted(map(str, loaded))[:10]}).")
    if all(key.startswith("module.") for key in state_dict):  # saved from a DistributedDataParallel wrapper
        state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if path.suffix in PICKLE_SUFFIXES:
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)
    raise ValueError(f"Unsupported checkpoint file {path}: expected .safetensors or one of {PICKLE_SUFFIXES}.")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint, on the CPU.

    Args:
        path: a `.safetensors` file, a pickled torch file (`.bin`, `.pt`, `.pth`, `.ckpt`; read with
            `torch.load(weights_only=True)`, so no code in it runs; a state dict wrapped by a training script under
            `state_dict`/`model`/... is unwrapped, nested dicts are flattened with dots), or a folder with such files
            (sharded with an index, or all the weight files it holds).
    """
    path = Path(path)
    if path.is_file():
        return _load_file(path)
    if not path.is_dir():
        raise ValueError(f"Checkpoint {path} does not exist.")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index_name).is_file():
            shards = sorted(set(json.loads((path / index_name).read_text())["weight_map"].values()))
            return {key: value for shard in shards for key, value in _load_file(path / shard).items()}
    files = sorted(path.glob("*.safetensors")) or sorted(p for s in PICKLE_SUFFIXES for p in path.glob(f"*{s}"))
    if not files:
        raise ValueError(f"No .safetensors or pickled torch weights in {path}.")
    return {key: value for file in files for key, value in _load_file(file).items()}


# ----------------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """Where source tensors whose key fully matches `pattern` go.

    Args:
        pattern: regular expression over the source key (after its component prefix).
        target: target key template, formatted with the pattern's groups (`"layers.{0}.stream_{1}.norm.weight"`); a
            tuple of templates writes the tensor to several keys (see `split_dim`). A callable takes the pattern's
            groups and returns the template(s), or `None` to drop the tensor, for targets whose indices are computed
            (e.g. `lambda i, p: f"frame_encoder.{int(i) // 3}.conv.{p}" if int(i) % 3 == 0 else None`). `None` drops
            every matching tensor.
        reason: why a dropped tensor has no use in our model (shown in reports and model cards).
        transform: applied to the tensor before splitting (e.g. a reshape).
        split_dim: with several targets, the dimension along which the tensor is split into that many equal chunks
            (fused projections, e.g. `to_qkv` -> q/k/v); `None` copies the whole tensor to every target (one
            parameter shared by modules that have their own copy in our model).
    """

    pattern: str
    target: str | tuple[str, ...] | Callable[..., str | tuple[str, ...]] | None
    reason: str = ""
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    split_dim: int | None = 0

    def targets(self, match: re.Match) -> tuple[str, ...]:
        """The target key(s) of a source key that matched `pattern`."""
        target = self.target(*match.groups()) if callable(self.target) else self.target
        if target is None:
            return ()
        templates = (target,) if isinstance(target, str) else target
        return tuple(template.format(*match.groups()) for template in templates)


def drop(pattern: str, reason: str) -> Rule:
    """A rule that drops the matching tensors, with the reason."""
    return Rule(pattern, None, reason=reason)


@dataclass(frozen=True)
class Component:
    """The tensors of a checkpoint under `source_prefix`, mapped by `rules` to keys under `target_prefix`."""

    source_prefix: str
    target_prefix: str
    rules: tuple[Rule, ...]


# ---------------------------------------------------------------------------------------------------------- report


def key_group(key: str) -> str:
    """`layers.3.stream_a.mlp.fc1.weight` -> `layers.*.stream_a.mlp.fc1.weight`: keys differing only by indices."""
    return re.sub(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)", "*", key)


def group_keys(statuses: Mapping[str, str], status: str) -> list[str]:
    """The keys whose status is `status`, grouped over the indices that do not change the status.

    An index of a key becomes `*` when every key that differs from it only at that index has the same status, so
    `postnet.*.1.weight` (a BatchNorm in each of several `[Conv1d, BatchNorm1d]` layers) stays apart from
    `postnet.*.0.weight` (their convolutions) when the two were treated differently, while layer indices collapse.

    Args:
        statuses: key -> status (e.g. "mapped" or the reason a tensor was dropped) of every key of the checkpoint or
            model.
        status: the status whose keys to group.
    """
    segments = {key: key.split(".") for key in statuses}
    numeric = {key: [i for i, part in enumerate(parts) if part.isdigit()] for key, parts in segments.items()}
    siblings: dict[tuple, set[str]] = defaultdict(set)  # (key with one index starred, index position) -> statuses
    for key, parts in segments.items():
        for i in numeric[key]:
            siblings[(*parts[:i], "*", *parts[i + 1:])].add(statuses[key])
    groups = []
    for key, parts in segments.items():
        if statuses[key] != status:
            continue
        grouped = [
            "*" if i in numeric[key] and len(siblings[(*parts[:i], "*", *parts[i + 1:])]) == 1 else part
            for i, part in enumerate(parts)
        ]
        groups.append(".".join(grouped))
    return list(dict.fromkeys(groups))


@dataclass
class ConversionReport:
    """What a conversion did, tensor by tensor.

    Attributes:
        source: the checkpoint converted.
        layout: name of the source layout.
        mapped: source key -> target key(s) it was written to.
        dropped: source key -> reason it was not used.
        initialised: parameters/buffers of the model that no source tensor provided (newly initialised).
        other_components: tensors of other components of a multi-component checkpoint, counted by top-level prefix.
    """

    source: str
    layout: str
    mapped: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)
    other_components: dict[str, int] = field(default_factory=dict)

    def summary(self, command: str) -> dict:
        """Compact form for a model card: dropped keys by reason, and initialised keys, grouped over the indices that
        do not change how a tensor was treated (see [`group_keys`])."""
        sources = {**{key: "mapped" for key in self.mapped}, **self.dropped}
        targets = {key: "mapped" for keys in self.mapped.values() for key in keys}
        targets.update({key: "initialised" for key in self.initialised})
        return {
            "source": self.source,
            "layout": self.layout,
            "command": command,
            "num_mapped": len(self.mapped),
            "dropped": {reason: group_keys(sources, reason) for reason in dict.fromkeys(self.dropped.values())},
            "initialised": group_keys(targets, "initialised"),
        }

    def save(self, path: str | os.PathLike):
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def __str__(self) -> str:
        lines = [f"Converted {self.source} ({self.layout}): {len(self.mapped)} tensors mapped."]
        if self.dropped:
            lines.append(f"Dropped {len(self.dropped)} tensors:")
            lines += [f"  {key}: {reason}" for key, reason in self.dropped.items()]
        if self.initialised:
            lines.append(f"Newly initialised {len(self.initialised)} tensors (not in the source):")
            lines += [f"  {key}" for key in self.initialised]
        if self.other_components:
            others = ", ".join(f"{prefix} ({count} tensors)" for prefix, count in self.other_components.items())
            lines.append(f"Ignored other components: {others}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- engine


def _match(rules: Sequence[Rule], key: str) -> tuple[Rule, re.Match] | tuple[None, None]:
    """The first rule whose pattern fully matches `key`, with its match."""
    for rule in rules:
        match = re.fullmatch(rule.pattern, key)
        if match:
            return rule, match
    return None, None


def _assign(
    state_dict: Mapping[str, torch.Tensor], components: Sequence[Component], prefix: str = ""
) -> tuple[dict[Component, dict[str, torch.Tensor]], dict[str, int]]:
    """Assign each key (read as `prefix + key`) to the component with the longest matching source prefix."""
    by_length = sorted(components, key=lambda component: len(component.source_prefix), reverse=True)
    assigned: dict[Component, dict[str, torch.Tensor]] = defaultdict(dict)
    others: Counter[str] = Counter()
    for key, tensor in state_dict.items():
        full_key = prefix + key
        component = next((c for c in by_length if full_key.startswith(c.source_prefix)), None)
        if component is None:
            others[full_key.split(".", 1)[0]] += 1
        else:
            assigned[component][full_key[len(component.source_prefix):]] = tensor
    return assigned, dict(others)


def _split_by_component(
    state_dict: Mapping[str, torch.Tensor], components: Sequence[Component]
) -> tuple[dict[Component, dict[str, torch.Tensor]], dict[str, int], str]:
    """Assign each key to the component with the longest matching prefix.

    A checkpoint with none of the prefixes is a component saved on its own (e.g. `vision_encoder.state_dict()`, or
    the `video_encoder` with its nested `vision_encoder.*`): its keys are read under the source prefix of the
    component whose rules then match the most of them (the last component on a tie).

    Returns:
        `(tensors by component, counts of other components' tensors by top-level prefix, the prefix the keys were
        read under)`.
    """
    if any(key.startswith(c.source_prefix) for key in state_dict for c in components if c.source_prefix):
        return (*_assign(state_dict, components), "")

    def matched(prefix: str) -> int:
        assigned, _ = _assign(state_dict, components, prefix)
        return sum(_match(c.rules, key)[0] is not None for c, tensors in assigned.items() for key in tensors)

    prefixes = list(dict.fromkeys(c.source_prefix for c in reversed(components)))
    prefix = max(prefixes, key=matched)  # max keeps the first (the last component's) on a tie
    return (*_assign(state_dict, components, prefix), prefix)


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    target_shapes: Mapping[str, torch.Size],
    components: Sequence[Component],
    source: str = "state dict",
    layout: str = "",
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map `state_dict` onto a model whose state dict has `target_shapes`.

    Every source key goes through the first rule of its component that fully matches it. A rule's target that is not
    a key of the model (e.g. a SigLIP pooling head when the model's backbone has none) drops the tensor, reported as
    such; so do keys no rule matches.

    Returns:
        `(tensors for model.load_state_dict(..., strict=False), report)`.

    Raises:
        ValueError: if any mapped tensor has a different shape than the parameter it lands on (all mismatches are
            listed), or a fused tensor cannot be split evenly.
    """
    report = ConversionReport(source=str(source), layout=layout)
    converted: dict[str, torch.Tensor] = {}
    mismatches: list[str] = []
    assigned, report.other_components, bare_prefix = _split_by_component(state_dict, components)
    for component, tensors in assigned.items():
        for key, tensor in tensors.items():
            full_key = (component.source_prefix + key)[len(bare_prefix):]  # the key as the checkpoint names it
            rule, match = _match(component.rules, key)
            if rule is None:
                report.dropped[full_key] = "no rule of this layout maps it (unknown tensor)"
                continue
            targets = [component.target_prefix + target for target in rule.targets(match)]
            if not targets:
                report.dropped[full_key] = rule.reason
                continue
            if any(target not in target_shapes for target in targets):
                report.dropped[full_key] = "not in this model (its config leaves that module out)"
                continue
            value = rule.transform(tensor) if rule.transform is not None else tensor
            if len(targets) == 1 or rule.split_dim is None:
                pieces = (value,) * len(targets)
            elif value.shape[rule.split_dim] % len(targets) != 0:
                mismatches.append(
                    f"{full_key} {list(tensor.shape)} cannot be split into {len(targets)} equal parts "
                    f"({', '.join(targets)})"
                )
                continue
            else:
                pieces = value.chunk(len(targets), dim=rule.split_dim)
            for target, piece in zip(targets, pieces):
                if piece.shape != target_shapes[target]:
                    mismatches.append(
                        f"{full_key} {list(tensor.shape)} -> {target}: got {list(piece.shape)}, the model expects "
                        f"{list(target_shapes[target])}"
                    )
                    continue
                converted[target] = piece.contiguous()
            report.mapped[full_key] = targets
    if mismatches:
        raise ValueError(
            f"Cannot convert {source}: {len(mismatches)} tensor(s) do not fit the model's config:\n  "
            + "\n  ".join(mismatches)
            + "\nPass a config whose sizes match the checkpoint."
        )
    report.initialised = [key for key in target_shapes if key not in converted]
    return converted, report


def load_converted(model: torch.nn.Module, converted: Mapping[str, torch.Tensor]) -> None:
    """Copy converted tensors into `model` (the others keep their initialisation)."""
    result = model.load_state_dict(dict(converted), strict=False)
    if result.unexpected_keys:  # convert_state_dict only targets keys of the model
        raise RuntimeError(f"Unexpected keys after conversion: {result.unexpected_keys}")


def most_common_float_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype most of the checkpoint's parameters use (float32 when it has none)."""
    counts = Counter(t.dtype for t in state_dict.values() if t.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


# ---------------------------------------------------------------------------------------------------------- output


def save_converted(
    model: torch.nn.Module,
    output_dir: str | os.PathLike,
    report: ConversionReport,
    command: str,
    processor=None,
    base_model: str | None = None,
    model_id: str | None = None,
) -> Path:
    """Write a converted model as a `save_pretrained` folder with its processor, `conversion_report.json` and a model
    card whose "Conversion" section summarises the report."""
    from ..modelcard import create_model_card

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    if processor is not None:
        processor.save_pretrained(output_dir)
    report.save(output_dir / "conversion_report.json")
    card = create_model_card(
        model, model_id=model_id or output_dir.name, base_model=base_model, conversion=report.summary(command)
    )
    card.save(output_dir / "README.md")
    return output_dir


def parse_overrides(pairs: Sequence[str], model_type: str | None = None) -> dict:
    """`["num_tokens=64", "hidden_act=gelu"]` -> `{"num_tokens": 64, "hidden_act": "gelu"}` (values parsed as JSON when
    they are JSON). With `model_type`, every key must be an argument of that model type's config: a misspelt key
    would otherwise be stored in `config.json` and ignored."""
    known = None
    if model_type is not None:
        from transformers import CONFIG_MAPPING

        known = {field.name for field in dataclasses.fields(CONFIG_MAPPING[model_type])}
        known |= {"num_labels", "attn_implementation"}  # `PreTrainedConfig` arguments that are not fields
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"Expected KEY=VALUE, got {pair!r}.")
        if known is not None and key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{key!r} is not an argument of the {model_type} config.{hint}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


__all__ = [
    "DTYPES",
    "Component",
    "ConversionReport",
    "Rule",
    "convert_state_dict",
    "drop",
    "group_keys",
    "key_group",
    "load_converted",
    "load_state_dict",
    "most_common_float_dtype",
    "parse_overrides",
    "resolve_checkpoint",
    "save_converted",
]
