"""The Hub: push and pull through huggingface_hub's real client against a Hub-compatible server on 127.0.0.1
(tests/hub_server.py), complete auto_map in saved checkpoints, and the model cards.

Pushing and pulling run in subprocesses whose environment points the client at the server (`HF_ENDPOINT`), exactly as
a user's would; the pull without the package runs where `omni_encoders` cannot be imported.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import transformers
import yaml
from transformers import PreTrainedConfig
from transformers.modelcard import TASK_TAG_TO_NAME_MAPPING, TrainingSummary

from helpers import (
    max_abs_diff,
    run_without_package,
    tiny_audio_config,
    tiny_audio_decoder_config,
    tiny_omni_config,
    tiny_video_config,
    tiny_vision_config,
)
from hub_server import HubServer
import omni_encoders
from omni_encoders import (
    OmniAudioDecoderModel,
    OmniAudioForAudioClassification,
    OmniAudioForCTC,
    OmniForConditionalGeneration,
    OmniVideoForVideoClassification,
    OmniVideoModel,
    OmniVisionForImageClassification,
    OmniVisionModel,
)
from omni_encoders.modelcard import MODEL_CARD_SPECS, TEMPLATES_DIR, create_model_card


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "omni_encoders"
REPO = "org/omni-vision-tiny"
PLAIN_TRAINER_REPO = "org/omni-vision-trainer-plain"
OMNI_TRAINER_REPO = "org/omni-vision-trainer"
TOWER_REPO = "vendor/siglip-tiny"
VIDEO_REPO = "org/omni-video-tiny"
ASR_REPO = "org/omni-audio-ctc-tiny"
AUDIO_CLASSIFIER_REPO = "org/omni-audio-classifier-tiny"
TTS_REPO = "org/omni-tts-tiny"
CODE_FILES = {"configuration_omni_vision.py", "modeling_omni_vision.py", "modeling_omni_common.py"}
# What each push of the video, audio and speech models must upload: auto_map of the model type, code and processor
# files, and the card's pipeline tag.
MEDIA_PUSHES = {
    VIDEO_REPO: {
        "auto_map": {
            "AutoConfig": "configuration_omni_video.OmniVideoConfig",
            "AutoModel": "modeling_omni_video.OmniVideoModel",
            "AutoModelForVideoClassification": "modeling_omni_video.OmniVideoForVideoClassification",
        },
        "files": CODE_FILES | {"configuration_omni_video.py", "modeling_omni_video.py",
                               "video_processing_omni_video.py", "video_preprocessor_config.json"},
        "pipeline_tag": "video-classification",
        "auto_class": "AutoModelForVideoClassification",
    },
    ASR_REPO: {
        "auto_map": {
            "AutoConfig": "configuration_omni_audio.OmniAudioConfig",
            "AutoModel": "modeling_omni_audio.OmniAudioModel",
            "AutoModelForCTC": "modeling_omni_audio.OmniAudioForCTC",
            "AutoModelForAudioClassification": "modeling_omni_audio.OmniAudioForAudioClassification",
        },
        "files": {"configuration_omni_audio.py", "modeling_omni_audio.py", "modeling_omni_common.py",
                  "feature_extraction_omni_audio.py", "processing_omni_audio.py", "vocab.json"},
        "pipeline_tag": "automatic-speech-recognition",
        "auto_class": "AutoModelForCTC",
    },
    AUDIO_CLASSIFIER_REPO: {
        "auto_map": {
            "AutoConfig": "configuration_omni_audio.OmniAudioConfig",
            "AutoModel": "modeling_omni_audio.OmniAudioModel",
            "AutoModelForCTC": "modeling_omni_audio.OmniAudioForCTC",
            "AutoModelForAudioClassification": "modeling_omni_audio.OmniAudioForAudioClassification",
        },
        "files": {"configuration_omni_audio.py", "modeling_omni_audio.py", "modeling_omni_common.py",
                  "feature_extraction_omni_audio.py", "preprocessor_config.json"},
        "pipeline_tag": "audio-classification",
        "auto_class": "AutoModelForAudioClassification",
    },
    TTS_REPO: {
        "auto_map": {
            "AutoConfig": "configuration_omni_audio_decoder.OmniAudioDecoderConfig",
            "AutoModel": "modeling_omni_audio_decoder.OmniAudioDecoderModel",
            "AutoModelForTextToWaveform": "modeling_omni_audio_decoder.OmniAudioDecoderModel",
        },
        "files": {"configuration_omni_audio_decoder.py", "modeling_omni_audio_decoder.py", "modeling_omni_vocoder.py",
                  "modeling_omni_common.py", "feature_extraction_omni_audio_decoder.py",
                  "processing_omni_audio_decoder.py", "tokenization_omni_audio_decoder.py", "vocab.json"},
        "pipeline_tag": "text-to-audio",
        "auto_class": "AutoModelForTextToWaveform",
    },
}


def front_matter(readme: str) -> dict:
    """The YAML metadata of a model card."""
    assert readme.startswith("---\n"), readme[:200]
    return yaml.safe_load(readme.split("---\n", 2)[1])


# ----------------------------------------------------------------------------------------------------- push / pull

# Shared by both scripts: a test waveform and the outputs of the video, audio and speech models and processors.
MEDIA_HELPERS = """
import numpy as np
import torch

time = np.arange(8000) / 16000
waveform = (0.5 * np.sin(2 * np.pi * (200 + 400 * time) * time) + 0.05 * np.random.RandomState(0).randn(8000))
waveform = waveform.astype(np.float32)
speech = {"raw": waveform, "sampling_rate": 16000}


def labelled(predictions):
    return [[p["label"], p["score"]] for p in predictions]


def media_outputs(video_model, video_base, video_proc, asr_model, asr_base, asr_proc, classifier, extractor, tts_model,
                  tts_proc):
    with torch.no_grad():
        clip = video_proc(CLIP, return_tensors="pt")
        audio = asr_proc(audio=waveform, sampling_rate=16000, return_tensors="pt")
        asr_logits = asr_model(**audio).logits
        text = tts_proc(text="hello hub", return_tensors="pt")
        sound = extractor(waveform, sampling_rate=16000, return_tensors="pt")
        return {
            "video_logits": video_model(**clip).logits.tolist(),
            "video_tokens": video_base(**clip).last_hidden_state.tolist(),
            "asr_logits": asr_logits.tolist(),
            "asr_text": asr_proc.batch_decode(asr_logits.argmax(-1))[0],
            "asr_features": asr_base(**audio).last_hidden_state.tolist(),
            "audio_logits": classifier(**sound).logits.tolist(),
            "speech": tts_model.generate(**text, speaker_ids=[1]).waveform[0].tolist(),
            "classes": [type(m).__name__ for m in (video_model, video_base, video_proc, asr_model, asr_base, asr_proc,
                                                  classifier, extractor, tts_model, tts_proc)],
        }
"""

# Runs with the package: pushes a classifier (sharded) and its processor, trains and pushes with a plain Trainer and
# with OmniTrainer, then pulls everything back by repo id through the client.
PUSH_AND_PULL = """
import json, sys
import PIL.Image, torch
from torch.utils.data import Dataset
from transformers import (AutoModel, AutoModelForImageClassification, AutoProcessor, Trainer, TrainingArguments,
                          pipeline)
from helpers import tiny_vision_config
from omni_encoders import OmniTrainer, OmniVisionForImageClassification, OmniVisionImageProcessor

REPO, PLAIN_TRAINER_REPO, OMNI_TRAINER_REPO, TOWER_REPO, IMAGE, OUT = sys.argv[1:7]
VIDEO_REPO, ASR_REPO, AUDIO_CLASSIFIER_REPO, TTS_REPO, CLIP = sys.argv[7:12]
torch.manual_seed(0)
config = tiny_vision_config(num_labels=2, id2label={0: "dark", 1: "bright"}, label2id={"dark": 0, "bright": 1})
model = OmniVisionForImageClassification(config).eval()
processor = OmniVisionImageProcessor(size={"height": 28, "width": 28})
processor.push_to_hub(REPO)  # first: the repo gets transformers' placeholder card
model.push_to_hub(REPO, max_shard_size="40KB")  # replaces the placeholder with the omni_vision card

pixel_values = processor(PIL.Image.open(IMAGE), return_tensors="pt").pixel_values
with torch.no_grad():
    logits = model(pixel_values).logits
    tokens = model.model(pixel_values).last_hidden_state

# ---- pull by repo id (the cache is empty: everything comes through the client)
classifier = AutoModelForImageClassification.from_pretrained(REPO).eval()
base = AutoModel.from_pretrained(REPO).eval()
pulled_processor = AutoProcessor.from_pretrained(REPO)
with torch.no_grad():
    pulled_pixels = pulled_processor(PIL.Image.open(IMAGE), return_tensors="pt").pixel_values
    pulled_logits = classifier(pulled_pixels).logits
    pulled_tokens = base(pulled_pixels).last_hidden_state
predictions = pipeline("image-classification", model=REPO)(PIL.Image.open(IMAGE))
features = pipeline("image-feature-extraction", model=REPO)(PIL.Image.open(IMAGE), return_tensors=True)

# ---- Trainer(push_to_hub=True)
class Images(Dataset):
    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.pixel_values = torch.randn(8, 3, 28, 28, generator=generator)
        self.labels = (self.pixel_values.mean((1, 2, 3)) > 0).long()
    def __len__(self):
        return len(self.labels)
    def __getitem__(self, i):
        return {"pixel_values": self.pixel_values[i], "labels": self.labels[i]}

def accuracy(prediction):
    logits = prediction.predictions[0]  # (logits, pooler_output)
    return {"accuracy": float((logits.argmax(-1) == prediction.label_ids).mean())}

def train(trainer_class, repo, **kwargs):
    torch.manual_seed(0)
    trained = OmniVisionForImageClassification(config)
    args = TrainingArguments(OUT + "/" + repo.split("/")[1], push_to_hub=True, hub_model_id=repo, max_steps=2,
                             per_device_train_batch_size=4, learning_rate=1e-3, report_to=[], use_cpu=True,
                             disable_tqdm=True, logging_steps=1, **kwargs)
    trainer = trainer_class(model=trained, args=args, train_dataset=Images(), eval_dataset=Images(),
                            processing_class=processor, compute_metrics=accuracy)
    trainer.train()
    metrics = trainer.evaluate()
    trainer.push_to_hub(dataset_tags="digits", dataset="digits")
    return trained.eval(), metrics

plain, _ = train(Trainer, PLAIN_TRAINER_REPO, save_strategy="no")
trained, metrics = train(OmniTrainer, OMNI_TRAINER_REPO, save_strategy="steps", save_steps=1, eval_strategy="steps",
                         eval_steps=1)
trained.push_to_hub(OMNI_TRAINER_REPO)  # the repo already has a card (with the training results): it is kept
with torch.no_grad():
    trained_logits = trained(pixel_values).logits
    pulled_trained = AutoModelForImageClassification.from_pretrained(OMNI_TRAINER_REPO).eval()(pixel_values).logits

# ---- a vision tower converted straight from the Hub
from huggingface_hub import ModelCard
from transformers import SiglipConfig, SiglipModel
from omni_encoders.conversion import convert_vision_tower

tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
siglip = SiglipModel(SiglipConfig(text_config={**tiny, "vocab_size": 99}, vision_config={**tiny, "image_size": 28,
                                                                                          "patch_size": 7}))
siglip.push_to_hub(TOWER_REPO)
converted, report = convert_vision_tower(TOWER_REPO, OUT + "/converted", num_attention_heads=4, num_tokens=3)
tower_state = siglip.vision_model.state_dict()
converted_card = ModelCard.load(OUT + "/converted/README.md")

# ---- the video, audio and speech models: each pushed with its processor, then pulled by repo id
from transformers import (AutoFeatureExtractor, AutoModelForAudioClassification, AutoModelForCTC,
                          AutoModelForTextToWaveform, AutoModelForVideoClassification)
from helpers import tiny_audio_config, tiny_audio_decoder_config, tiny_video_config
from omni_encoders import (OmniAudioDecoderFeatureExtractor, OmniAudioDecoderModel, OmniAudioDecoderProcessor,
                           OmniAudioDecoderTokenizer, OmniAudioFeatureExtractor, OmniAudioForAudioClassification,
                           OmniAudioForCTC, OmniAudioProcessor, OmniVideoForVideoClassification,
                           OmniVideoVideoProcessor)

def pushed(model, processor, repo):
    processor.push_to_hub(repo)
    model.push_to_hub(repo)
    return model.eval()

directions = {"id2label": {0: "left", 1: "right"}, "label2id": {"left": 0, "right": 1}}
video_processor = OmniVideoVideoProcessor(size={"height": 28, "width": 28}, num_frames=4)
video = pushed(OmniVideoForVideoClassification(tiny_video_config(num_labels=2, **directions)), video_processor,
               VIDEO_REPO)
asr_processor = OmniAudioProcessor.from_characters()
asr = pushed(OmniAudioForCTC(tiny_audio_config()), asr_processor, ASR_REPO)
sounds = {"id2label": {0: "speech", 1: "music", 2: "noise"}, "label2id": {"speech": 0, "music": 1, "noise": 2}}
audio_extractor = OmniAudioFeatureExtractor()
audio_classifier = pushed(OmniAudioForAudioClassification(tiny_audio_config(num_labels=3, **sounds)),
                          audio_extractor, AUDIO_CLASSIFIER_REPO)
tts_config = tiny_audio_decoder_config()
tts_processor = OmniAudioDecoderProcessor(OmniAudioDecoderFeatureExtractor.from_model_config(tts_config),
                                          OmniAudioDecoderTokenizer())
tts = pushed(OmniAudioDecoderModel(tts_config), tts_processor, TTS_REPO)

""" + MEDIA_HELPERS + """
media = {"pushed": media_outputs(video, video.model, video_processor, asr, asr.model, asr_processor, audio_classifier,
                                 audio_extractor, tts, tts_processor)}
media["pulled"] = media_outputs(
    AutoModelForVideoClassification.from_pretrained(VIDEO_REPO).eval(), AutoModel.from_pretrained(VIDEO_REPO).eval(),
    AutoProcessor.from_pretrained(VIDEO_REPO), AutoModelForCTC.from_pretrained(ASR_REPO).eval(),
    AutoModel.from_pretrained(ASR_REPO).eval(), AutoProcessor.from_pretrained(ASR_REPO),
    AutoModelForAudioClassification.from_pretrained(AUDIO_CLASSIFIER_REPO).eval(),
    AutoFeatureExtractor.from_pretrained(AUDIO_CLASSIFIER_REPO), AutoModelForTextToWaveform.from_pretrained(TTS_REPO),
    AutoProcessor.from_pretrained(TTS_REPO),
)
with torch.no_grad():
    unconditioned = tts.generate(**tts_processor(text="hello hub", return_tensors="pt")).waveform[0]
media["pipelines"] = {
    "video-classification": labelled(pipeline("video-classification", model=VIDEO_REPO)(CLIP)),
    "automatic-speech-recognition": pipeline("automatic-speech-recognition", model=ASR_REPO)(dict(speech))["text"],
    "audio-classification": labelled(pipeline("audio-classification", model=AUDIO_CLASSIFIER_REPO)(dict(speech))),
    "text-to-audio": pipeline("text-to-audio", model=TTS_REPO)("hello hub")["audio"].tolist(),
}
media["unconditioned_speech"] = unconditioned.tolist()

print(json.dumps({
    "media": media,
    "tower_copied": all(torch.equal(v, tower_state[k]) for k, v in converted.backbone.state_dict().items()),
    "tower_report_source": report.source, "tower_card_base_model": converted_card.data.base_model,
    "logits": logits.tolist(), "tokens": tokens.tolist(), "trained_logits": trained_logits.tolist(),
    "eval_accuracy": metrics["eval_accuracy"],
    "pulled": {"classifier": type(classifier).__name__, "base": type(base).__name__,
               "processor": type(pulled_processor).__name__, "logits": pulled_logits.tolist(),
               "tokens": pulled_tokens.tolist(), "trained_logits": pulled_trained.tolist()},
    "pipeline": [[p["label"], p["score"]] for p in predictions], "features_shape": list(features.shape),
}))
"""

# Runs where omni_encoders cannot be imported: everything through trust_remote_code=True.
PULL_WITHOUT_PACKAGE = """
import os
os.environ.update({env!r})
import json, PIL.Image, torch
from huggingface_hub import HfApi
from transformers import AutoModel, AutoModelForImageClassification, AutoProcessor, pipeline

image = PIL.Image.open({image!r})
classifier = AutoModelForImageClassification.from_pretrained({repo!r}, trust_remote_code=True).eval()
base = AutoModel.from_pretrained({repo!r}, trust_remote_code=True).eval()  # the classifier's encoder: full auto_map
processor = AutoProcessor.from_pretrained({repo!r}, trust_remote_code=True)
pixel_values = processor(image, return_tensors="pt").pixel_values
with torch.no_grad():
    logits, tokens = classifier(pixel_values).logits, base(pixel_values).last_hidden_state
predictions = pipeline("image-classification", model={repo!r}, trust_remote_code=True)(image)
features = pipeline("image-feature-extraction", model={repo!r}, trust_remote_code=True)(image, return_tensors=True)

# a checkpoint pushed by OmniTrainer during training (before its final push) loads too
first_save = {first_save!r}
during_training = AutoModelForImageClassification.from_pretrained(
    {trainer_repo!r}, revision=first_save, trust_remote_code=True)
final = AutoModelForImageClassification.from_pretrained({trainer_repo!r}, trust_remote_code=True).eval()
with torch.no_grad():
    trained_logits = final(pixel_values).logits

# a base-model checkpoint takes a classification head (AutoModelForImageClassification is in its auto_map too)
head = AutoModelForImageClassification.from_pretrained({base_dir!r}, num_labels=3, trust_remote_code=True)

# the video, audio and speech models, every Auto class and pipeline by repo id
from transformers import (AutoFeatureExtractor, AutoModelForAudioClassification, AutoModelForCTC,
                          AutoModelForTextToWaveform, AutoModelForVideoClassification)
{media_helpers}
CLIP = {clip!r}
video_repo, asr_repo, audio_classifier_repo, tts_repo = {media_repos!r}
remote = dict(trust_remote_code=True)
media = {{"pulled": media_outputs(
    AutoModelForVideoClassification.from_pretrained(video_repo, **remote).eval(),
    AutoModel.from_pretrained(video_repo, **remote).eval(), AutoProcessor.from_pretrained(video_repo, **remote),
    AutoModelForCTC.from_pretrained(asr_repo, **remote).eval(), AutoModel.from_pretrained(asr_repo, **remote).eval(),
    AutoProcessor.from_pretrained(asr_repo, **remote),
    AutoModelForAudioClassification.from_pretrained(audio_classifier_repo, **remote).eval(),
    AutoFeatureExtractor.from_pretrained(audio_classifier_repo, **remote),
    AutoModelForTextToWaveform.from_pretrained(tts_repo, **remote), AutoProcessor.from_pretrained(tts_repo, **remote),
)}}
media["pipelines"] = {{
    "video-classification": labelled(pipeline("video-classification", model=video_repo, **remote)(CLIP)),
    "automatic-speech-recognition": pipeline("automatic-speech-recognition", model=asr_repo, **remote)(
        dict(speech))["text"],
    "audio-classification": labelled(pipeline("audio-classification", model=audio_classifier_repo, **remote)(
        dict(speech))),
    "text-to-audio": pipeline("text-to-audio", model=tts_repo, **remote)("hello hub")["audio"].tolist(),
}}
print(json.dumps({{
    "media": media,
    "classifier": type(classifier).__name__, "base": type(base).__name__, "processor": type(processor).__name__,
    "logits": logits.tolist(), "tokens": tokens.tolist(), "trained_logits": trained_logits.tolist(),
    "pipeline": [[p["label"], p["score"]] for p in predictions], "features_shape": list(features.shape),
    "during_training": type(during_training).__name__, "head": [type(head).__name__, head.config.num_labels],
}}))
"""


def run_with_package(script: str, args: list[str], env: dict, cwd: Path) -> dict:
    """Run `script` with the package importable and the client environment `env`; return its last JSON line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=300,
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])},
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stderr[-6000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_push_and_pull_through_the_hub_client(tmp_path):
    """One round trip through a local Hub, checked aspect by aspect below (the pushes and pulls take seconds, so they
    run once)."""
    with HubServer() as hub:
        pushed = push_and_pull_with_the_package(hub, tmp_path / "with_package")
        check_model_and_processor_pushes(hub)
        check_pull_with_the_package(pushed)
        check_trainer_pushes(hub, pushed)
        check_media_pushes(hub)
        check_media_pulls_with_the_package(pushed)
        check_pull_without_the_package(hub, pushed, tmp_path / "without_package")
        check_vision_tower_conversion_from_the_hub(pushed)
        assert hub.unknown_requests == []  # every request the clients made is one the server implements


# Pushes a tiny omni-modal LLM (a Llama with every encoder and the speech decoder) and its processor, then pulls both
# back by repo id with the Auto classes and runs the same prompts through each.
OMNI_PUSH_AND_PULL = """
import json, sys
import numpy as np, torch
from transformers import AutoModelForImageTextToText, AutoModelForMultimodalLM, AutoProcessor
from helpers import tiny_omni_config, tiny_omni_tokenizer
from omni_encoders import OmniForConditionalGeneration, OmniProcessor

(REPO,) = sys.argv[1:2]
torch.manual_seed(0)
model = OmniForConditionalGeneration(tiny_omni_config()).eval()
processor = OmniProcessor.from_config(model.config, tiny_omni_tokenizer())
processor.push_to_hub(REPO)  # first: the repo gets transformers' placeholder card
model.push_to_hub(REPO)  # replaces it with the omni card

rng = np.random.default_rng(0)
image = (rng.random((28, 28, 3)) * 255).astype(np.uint8)
video = (rng.random((2, 28, 28, 3)) * 255).astype(np.uint8)
audio = (0.1 * rng.standard_normal(3000)).astype(np.float32)
prompts = ["User: <image> what digit is this ?</s>\\nAssistant:", "User: <video> <audio> transcribe</s>\\nAssistant:"]


def run(model, processor):
    inputs = processor(text=prompts, images=[image], videos=[video], audio=[audio], sampling_rate=16000,
                       padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    spoken = model.generate(**inputs, max_new_tokens=4, do_sample=False, return_audio=True,
                            speaker_ids=torch.tensor([0, 1]))
    return {"class": type(model).__name__, "processor": type(processor).__name__,
            "input_ids": inputs["input_ids"].tolist(), "logits": logits.tolist(),
            "sequences": spoken.sequences.tolist(), "waveform": spoken.waveform.tolist()}


pushed = run(model, processor)
pulled = run(AutoModelForImageTextToText.from_pretrained(REPO).eval(), AutoProcessor.from_pretrained(REPO))
multimodal = type(AutoModelForMultimodalLM.from_pretrained(REPO)).__name__
print(json.dumps({"pushed": pushed, "pulled": pulled, "multimodal": multimodal}))
"""


def test_push_and_pull_the_omni_model_through_the_hub_client(tmp_path):
    """The omni-modal LLM and its processor pushed to a local Hub and pulled back by repo id: the same inputs, logits,
    answers and speech; the config maps both Auto classes, the code and processor files are uploaded, and the card is
    the omni card."""
    repo_id = "org/omni-llm-tiny"
    with HubServer() as hub:
        env = hub.client_env(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_PROGRESS_BARS="1",
                             TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
        result = run_with_package(OMNI_PUSH_AND_PULL, [repo_id], env, cwd=tmp_path)
        assert hub.unknown_requests == []
        repo = hub.repos[repo_id]
        files = repo.commit_at("main").files
        processor_card = repo.commits[1].files["README.md"].content.decode()

    pushed, pulled = result["pushed"], result["pulled"]
    assert (pulled["class"], pulled["processor"]) == ("OmniForConditionalGeneration", "OmniProcessor")
    assert result["multimodal"] == "OmniForConditionalGeneration"
    assert pulled["input_ids"] == pushed["input_ids"]
    assert max_abs_diff(torch.tensor(pulled["logits"]), torch.tensor(pushed["logits"])) == 0
    assert pulled["sequences"] == pushed["sequences"]
    assert max_abs_diff(torch.tensor(pulled["waveform"]), torch.tensor(pushed["waveform"])) == 0

    assert json.loads(files["config.json"].content)["auto_map"] == {
        "AutoConfig": "configuration_omni.OmniConfig",
        "AutoModelForImageTextToText": "modeling_omni.OmniForConditionalGeneration",
        "AutoModelForMultimodalLM": "modeling_omni.OmniForConditionalGeneration",
    }
    code = {"configuration_omni.py", "modeling_omni.py", "processing_omni.py", "modeling_omni_vision.py",
            "modeling_omni_video.py", "modeling_omni_audio.py", "modeling_omni_audio_decoder.py"}
    assert {"model.safetensors", "processor_config.json", "tokenizer.json", "chat_template.jinja"} | code <= set(files)
    for name in code:
        assert files[name].content == (PACKAGE / name).read_bytes(), name

    assert "pushed on the Hub" in processor_card  # the model push replaced the processor's placeholder card
    readme = files["README.md"].content.decode()
    metadata = front_matter(readme)
    assert metadata["pipeline_tag"] == "image-text-to-text" and metadata["library_name"] == "transformers"
    assert {"omni-encoders", "omni", "multimodal", "llm", "any-to-any"} <= set(metadata["tags"])
    assert f"# {repo_id}\n" in readme
    assert f'AutoModelForImageTextToText.from_pretrained("{repo_id}", trust_remote_code=True)' in readme
    assert "reads text, images, videos and audio, and can speak its answers" in readme
    assert "| image | `<image>` (3) | 6 per image" in readme


def push_and_pull_with_the_package(hub: HubServer, workdir: Path) -> dict:
    """Push a classifier and its processor, train and push with Trainer and OmniTrainer, push the video, audio and
    speech models with their processors, and pull everything back by repo id."""
    workdir.mkdir()
    image = workdir / "image.png"
    PIL.Image.fromarray((np.random.RandomState(0).rand(30, 40, 3) * 255).astype(np.uint8)).save(image)
    clip = workdir / "clip.mp4"
    write_video(clip, (np.random.RandomState(1).rand(6, 30, 40, 3) * 255).astype(np.uint8))
    env = hub.client_env(
        HF_HOME=str(workdir / "hf_home"),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TRANSFORMERS_VERBOSITY="error",
        TOKENIZERS_PARALLELISM="false",
    )
    args = [REPO, PLAIN_TRAINER_REPO, OMNI_TRAINER_REPO, TOWER_REPO, str(image), str(workdir / "runs"), VIDEO_REPO,
            ASR_REPO, AUDIO_CLASSIFIER_REPO, TTS_REPO, str(clip)]
    result = run_with_package(PUSH_AND_PULL, args, env, cwd=workdir)
    return {"result": result, "image": image, "clip": clip}


def write_video(path: Path, frames: np.ndarray, fps: int = 10):
    """Encode `frames [T, H, W, 3]` (uint8 RGB) as an H.264 mp4 with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def check_media_pushes(hub: HubServer):
    """The video, audio and speech models' pushes: config with every Auto class of the model type, code, processor
    files and the model type's card (which replaced the placeholder of the processor pushed first)."""
    for repo_id, expected in MEDIA_PUSHES.items():
        repo = hub.repos[repo_id]
        files = repo.commit_at("main").files
        assert json.loads(files["config.json"].content)["auto_map"] == expected["auto_map"], repo_id
        assert {"model.safetensors", "README.md"} | expected["files"] <= set(files), repo_id
        for name in expected["files"]:
            if name.endswith(".py"):
                assert files[name].content == (PACKAGE / name).read_bytes(), (repo_id, name)
        assert "pushed on the Hub" in repo.commits[1].files["README.md"].content.decode(), repo_id
        readme = files["README.md"].content.decode()
        metadata = front_matter(readme)
        assert metadata["pipeline_tag"] == expected["pipeline_tag"] and "omni-encoders" in metadata["tags"], repo_id
        assert json.loads(files["config.json"].content)["model_type"] in metadata["tags"], repo_id
        assert f'{expected["auto_class"]}.from_pretrained("{repo_id}", trust_remote_code=True)' in readme, repo_id
    assert "2 classes: left, right" in hub.repos[VIDEO_REPO].files_at("main")["README.md"].decode()


def check_media_outputs(outputs: dict, expected: dict, atol: float):
    for key in ("video_logits", "video_tokens", "asr_logits", "asr_features", "audio_logits", "speech"):
        assert max_abs_diff(torch.tensor(outputs[key]), torch.tensor(expected[key])) < atol, key
    assert outputs["asr_text"] == expected["asr_text"] and len(expected["asr_text"]) > 0


def check_pipeline_predictions(predictions: list, logits: list, labels: list[str]):
    """Labels sorted by score, scores the softmax of the model's logits."""
    probabilities = torch.tensor(logits).softmax(-1)[0].tolist()
    expected = sorted(zip(labels, probabilities), key=lambda pair: -pair[1])
    assert [label for label, _ in predictions] == [label for label, _ in expected]
    assert [score for _, score in predictions] == pytest.approx([score for _, score in expected], abs=1e-5)


def check_media_pulls_with_the_package(pushed: dict):
    """The video, audio and speech models pulled by repo id with the Auto classes (the base model from a head's repo
    too) and their processors give the pushed models' outputs; so do their pipelines."""
    media = pushed["result"]["media"]
    assert media["pulled"]["classes"] == media["pushed"]["classes"] == [
        "OmniVideoForVideoClassification", "OmniVideoModel", "OmniVideoVideoProcessor", "OmniAudioForCTC",
        "OmniAudioModel", "OmniAudioProcessor", "OmniAudioForAudioClassification", "OmniAudioFeatureExtractor",
        "OmniAudioDecoderModel", "OmniAudioDecoderProcessor",
    ]
    check_media_outputs(media["pulled"], media["pushed"], atol=1e-6)
    check_media_pipelines(media["pipelines"], media)


def check_media_pipelines(pipelines: dict, media: dict):
    pushed = media["pushed"]
    check_pipeline_predictions(pipelines["video-classification"], pushed["video_logits"], ["left", "right"])
    assert pipelines["automatic-speech-recognition"] == pushed["asr_text"]
    check_pipeline_predictions(pipelines["audio-classification"], pushed["audio_logits"], ["speech", "music", "noise"])
    speech = torch.tensor(pipelines["text-to-audio"])
    assert speech.shape[-1] > 0
    assert max_abs_diff(speech.flatten(), torch.tensor(media["unconditioned_speech"])) < 1e-5


def check_model_and_processor_pushes(hub: HubServer):
    """`model.push_to_hub` and `processor.push_to_hub` uploaded config with the full auto_map, sharded safetensors
    (through LFS), processor config, code files and the omni_vision card."""
    repo = hub.repos[REPO]
    head = repo.commit_at("main")
    files = head.files
    shards = sorted(path for path in files if path.startswith("model-") and path.endswith(".safetensors"))
    assert len(shards) >= 2 and all(files[path].lfs for path in shards)  # sharded, uploaded through git-LFS
    index = json.loads(files["model.safetensors.index.json"].content)
    assert sorted(set(index["weight_map"].values())) == shards
    assert "model.safetensors" not in files

    config = json.loads(files["config.json"].content)
    assert config["auto_map"] == {
        "AutoConfig": "configuration_omni_vision.OmniVisionConfig",
        "AutoModel": "modeling_omni_vision.OmniVisionModel",
        "AutoModelForImageClassification": "modeling_omni_vision.OmniVisionForImageClassification",
    }
    preprocessor = json.loads(files["preprocessor_config.json"].content)
    assert preprocessor["auto_map"] == {"AutoImageProcessor": "image_processing_omni_vision.OmniVisionImageProcessor"}
    for name in CODE_FILES | {"image_processing_omni_vision.py"}:
        assert files[name].content == (PACKAGE / name).read_bytes(), name

    # the processor, pushed first, left transformers' placeholder card; the model push replaced it with ours
    processor_commit = repo.commits[1]
    assert "pushed on the Hub" in processor_commit.files["README.md"].content.decode()
    readme = files["README.md"].content.decode()
    metadata = front_matter(readme)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-classification"
    assert {"omni-encoders", "omni_vision", "vision"} <= set(metadata["tags"])
    assert metadata["license"] == "apache-2.0"
    assert f'AutoModelForImageClassification.from_pretrained("{REPO}", trust_remote_code=True)' in readme
    assert "2 classes: dark, bright" in readme


def check_pull_with_the_package(pushed: dict):
    """AutoModel*, AutoProcessor and pipelines by repo id, with the package: same outputs as the pushed model."""
    result = pushed["result"]
    pulled = result["pulled"]
    assert (pulled["classifier"], pulled["base"], pulled["processor"]) == (
        "OmniVisionForImageClassification", "OmniVisionModel", "OmniVisionImageProcessor"
    )
    assert max_abs_diff(torch.tensor(pulled["logits"]), torch.tensor(result["logits"])) < 1e-6
    assert max_abs_diff(torch.tensor(pulled["tokens"]), torch.tensor(result["tokens"])) < 1e-6
    probabilities = torch.tensor(result["logits"]).softmax(-1)[0]
    expected = sorted(zip(["dark", "bright"], probabilities.tolist()), key=lambda p: -p[1])
    assert [label for label, _ in result["pipeline"]] == [label for label, _ in expected]
    assert [score for _, score in result["pipeline"]] == pytest.approx([score for _, score in expected], abs=1e-5)
    assert result["features_shape"] == [1, 6, 32]
    assert max_abs_diff(torch.tensor(pulled["trained_logits"]), torch.tensor(result["trained_logits"])) < 1e-6


def check_pull_without_the_package(hub: HubServer, pushed: dict, tmp_path: Path):
    """The same by repo id where omni_encoders cannot be imported (trust_remote_code=True), every Auto class, for the
    vision, video, audio and speech models."""
    tmp_path.mkdir()
    expected = pushed["result"]
    OmniVisionModel(tiny_vision_config()).save_pretrained(tmp_path / "base")
    commits = hub.repos[OMNI_TRAINER_REPO].commits
    first_save = next(c.oid for c in commits if c.message.startswith("Training in progress"))
    env = hub.client_env(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    result = run_without_package(
        PULL_WITHOUT_PACKAGE.format(
            env=env, image=str(pushed["image"]), repo=REPO, trainer_repo=OMNI_TRAINER_REPO, first_save=first_save,
            base_dir=str(tmp_path / "base"), media_helpers=MEDIA_HELPERS, clip=str(pushed["clip"]),
            media_repos=(VIDEO_REPO, ASR_REPO, AUDIO_CLASSIFIER_REPO, TTS_REPO),
        ),
        tmp_path,
    )
    media = result["media"]
    assert media["pulled"]["classes"] == expected["media"]["pushed"]["classes"]
    check_media_outputs(media["pulled"], expected["media"]["pushed"], atol=1e-5)
    check_media_pipelines(media["pipelines"], expected["media"])
    assert (result["classifier"], result["base"], result["processor"]) == (
        "OmniVisionForImageClassification", "OmniVisionModel", "OmniVisionImageProcessor"
    )
    assert max_abs_diff(torch.tensor(result["logits"]), torch.tensor(expected["logits"])) < 1e-5
    assert max_abs_diff(torch.tensor(result["tokens"]), torch.tensor(expected["tokens"])) < 1e-5
    assert result["pipeline"][0][0] == expected["pipeline"][0][0]
    assert [score for _, score in result["pipeline"]] == pytest.approx([s for _, s in expected["pipeline"]], abs=1e-5)
    assert result["features_shape"] == [1, 6, 32]
    assert max_abs_diff(torch.tensor(result["trained_logits"]), torch.tensor(expected["trained_logits"])) < 1e-5
    assert result["during_training"] == "OmniVisionForImageClassification"
    assert result["head"] == ["OmniVisionForImageClassification", 3]


def check_vision_tower_conversion_from_the_hub(pushed: dict):
    """`convert_vision_tower("org/name")` downloads the tower through the client and names it as the base model."""
    result = pushed["result"]
    assert result["tower_copied"] is True
    assert result["tower_report_source"] == TOWER_REPO and result["tower_card_base_model"] == TOWER_REPO


def check_trainer_pushes(hub: HubServer, pushed: dict):
    """Trainer(push_to_hub=True) uploads everything; OmniTrainer also the code and its card during training."""
    # A plain Trainer: config with the full auto_map, weights, processor and code; transformers' training card.
    plain = hub.repos[PLAIN_TRAINER_REPO].files_at("main")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} | CODE_FILES <= set(plain)
    assert set(json.loads(plain["config.json"])["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForImageClassification"
    }
    assert "generated_from_trainer" in front_matter(plain["README.md"].decode())["tags"]

    # OmniTrainer: every push during training already carries the code and a card; the final card is ours with the
    # training results as metadata.
    repo = hub.repos[OMNI_TRAINER_REPO]
    during_training = [c for c in repo.commits if c.message.startswith("Training in progress")]
    assert len(during_training) >= 1
    for commit in during_training:
        assert CODE_FILES | {"config.json", "model.safetensors", "README.md"} <= set(commit.files), commit.message
    final_pushes = [c for c in repo.commits if c.message == "End of training"]
    readme = final_pushes[-1].files["README.md"].content.decode()
    assert repo.files_at("main")["README.md"].decode() == readme  # the later model.push_to_hub kept the card
    metadata = front_matter(readme)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-classification"
    assert {"omni-encoders", "omni_vision", "generated_from_trainer"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["digits"] and metadata["metrics"] == ["accuracy"]
    (result,) = metadata["model-index"][0]["results"]
    assert result["task"]["type"] == "image-classification" and result["dataset"]["type"] == "digits"
    assert result["metrics"][0]["value"] == pytest.approx(pushed["result"]["eval_accuracy"])
    assert "## Training" in readme and "learning_rate: 0.001" in readme and "| Training Loss |" in readme


# ----------------------------------------------------------------------------------------------------- auto_map


VISION_AUTO_MAP = {
    "AutoConfig": "configuration_omni_vision.OmniVisionConfig",
    "AutoModel": "modeling_omni_vision.OmniVisionModel",
    "AutoModelForImageClassification": "modeling_omni_vision.OmniVisionForImageClassification",
}
OMNI_AUTO_MAP = {
    "AutoConfig": "configuration_omni.OmniConfig",
    "AutoModelForImageTextToText": "modeling_omni.OmniForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_omni.OmniForConditionalGeneration",
}


@pytest.mark.parametrize("model_class, config, auto_map", [
    (OmniVisionModel, lambda: tiny_vision_config(num_labels=2), VISION_AUTO_MAP),
    (OmniVisionForImageClassification, lambda: tiny_vision_config(num_labels=2), VISION_AUTO_MAP),
    (OmniVideoModel, tiny_video_config, MEDIA_PUSHES[VIDEO_REPO]["auto_map"]),
    (OmniAudioForCTC, tiny_audio_config, MEDIA_PUSHES[ASR_REPO]["auto_map"]),
    (OmniAudioDecoderModel, tiny_audio_decoder_config, MEDIA_PUSHES[TTS_REPO]["auto_map"]),
    (OmniForConditionalGeneration, tiny_omni_config, OMNI_AUTO_MAP),
])
def test_saved_checkpoints_map_every_auto_class_of_the_model_type(tmp_path, model_class, config, auto_map):
    """A checkpoint of any class of a model type maps every Auto class of the type, ships the code they import, and
    loads with each of them (the class the map names)."""
    model_class(config()).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == auto_map
    saved = {path.name for path in tmp_path.iterdir()}
    assert {f"{target.split('.')[0]}.py" for target in auto_map.values()} | {"modeling_omni_common.py"} <= saved
    for auto_class, target in auto_map.items():
        if auto_class != "AutoConfig":
            loaded = getattr(transformers, auto_class).from_pretrained(tmp_path)
            assert type(loaded) is getattr(omni_encoders, target.split(".")[1]), auto_class


# ----------------------------------------------------------------------------------------------------- model cards


def test_model_card_metadata_for_a_model_and_a_config():
    classifier = OmniVisionForImageClassification(tiny_vision_config(num_labels=2))
    card = create_model_card(classifier, model_id="org/classifier", base_model="google/siglip-base-patch16-224",
                             datasets="cifar10", tags=["custom"])
    metadata = front_matter(str(card))
    assert metadata == {
        "library_name": "transformers",
        "license": "apache-2.0",
        "pipeline_tag": "image-classification",
        "tags": ["omni-encoders", "omni_vision", "vision", "siglip", "titok", "2d-rope", "custom"],
        "base_model": "google/siglip-base-patch16-224",
        "datasets": ["cifar10"],
    }
    assert card.data.pipeline_tag == "image-classification"
    assert "[google/siglip-base-patch16-224](https://huggingface.co/google/siglip-base-patch16-224)" in card.text
    assert "| `last_hidden_state` | `[batch, 6, 32]` |" in card.text
    assert "| `logits` | `[batch, 2]` |" in card.text
    for section in ("## Architecture", "## Intended use", "## Inputs and outputs", "## How to load",
                    "## How to fine-tune", "## Limitations", "## Citation"):
        assert section in card.text, section
    assert "arXiv:2303.15343" in card.text and "arXiv:2406.07550" in card.text  # SigLIP, TiTok

    base = front_matter(str(create_model_card(tiny_vision_config())))
    assert base["pipeline_tag"] == "image-feature-extraction" and "base_model" not in base


def test_model_card_takes_the_metrics_of_a_training_run():
    training = TrainingSummary(
        model_name="run",
        dataset="digits",
        dataset_tags="digits",
        eval_results={"Loss": 0.5, "Accuracy": 0.875},
        eval_lines=[{"Training Loss": 0.7, "Epoch": 1.0, "Step": 10, "Validation Loss": 0.5, "Accuracy": 0.875}],
        hyperparameters={"learning_rate": 0.001, "train_batch_size": 4},
    )
    card = create_model_card(OmniVisionForImageClassification(tiny_vision_config(num_labels=2)),
                             model_id="org/trained", training=training)
    metadata = front_matter(str(card))
    assert metadata["metrics"] == ["accuracy"] and metadata["datasets"] == ["digits"]
    (result,) = metadata["model-index"][0]["results"]
    assert metadata["model-index"][0]["name"] == "trained"
    assert result["task"] == {"name": "Image Classification", "type": "image-classification"}
    assert result["metrics"] == [{"name": "Accuracy", "type": "accuracy", "value": 0.875}]
    assert card.data.eval_results[0].metric_value == 0.875
    assert "- learning_rate: 0.001" in card.text and "| Training Loss | Epoch | Step |" in card.text


@pytest.mark.parametrize("model, task", [
    (lambda: OmniVideoForVideoClassification(tiny_video_config(num_labels=2)), "Video Classification"),
    (lambda: OmniAudioForCTC(tiny_audio_config()), "Automatic Speech Recognition"),
    (lambda: OmniAudioForAudioClassification(tiny_audio_config(num_labels=2)), "Audio Classification"),
    (lambda: OmniAudioDecoderModel(tiny_audio_decoder_config()), "Text-to-Audio"),
    (lambda: OmniForConditionalGeneration(tiny_omni_config(modalities=("image",))), "Image-Text-to-Text"),
])
def test_training_results_reach_the_model_index_of_every_head(model, task):
    """transformers' TrainingSummary leaves tasks it does not know (video classification, text-to-audio) out of the
    model-index; the cards of every head carry their evaluation results."""
    model = model()
    training = TrainingSummary(model_name="run", dataset="speech", dataset_tags="speech",
                               eval_results={"Loss": 0.5, "Wer": 0.25}, hyperparameters={"learning_rate": 0.001})
    metadata = front_matter(str(create_model_card(model, model_id="org/trained", training=training)))
    (result,) = metadata["model-index"][0]["results"]
    assert result["task"] == {"type": metadata["pipeline_tag"], "name": task}
    assert result["metrics"] == [{"name": "Wer", "type": "wer", "value": 0.25}]
    assert "video-classification" not in TASK_TAG_TO_NAME_MAPPING  # transformers' table is left as it was


@pytest.mark.parametrize("modalities, shown, hidden", [
    (("image", "video", "audio", "speech"), ["reads text, images, videos and audio, and can speak its answers",
                                              "| speech output (`speech_projector`, `speech_decoder`) |"], []),
    (("audio",), ["reads text and audio.", "| audio | `<audio>` (5) | one per 256 valid samples",
                  'tokenizer.add_tokens(["<audio>"], special_tokens=True)', "freeze=(\"text\", \"audio\")"],
     ["<image>", "pixel_values", "return_audio", "speech_decoder=", "image-text-to-text\", model"]),
])
def test_omni_card_describes_the_parts_of_the_model_and_of_a_config(modalities, shown, hidden):
    """The omni card of a model and of its bare config: the parts present (and only those), the model's class and size
    for a model, the Auto class that loads the omni model (not AutoModel) for both."""
    config = tiny_omni_config(modalities=modalities)
    model = OmniForConditionalGeneration(config)
    model_card = create_model_card(model, model_id="org/omni")
    config_card = create_model_card(config, model_id="org/omni")
    assert re.search(r"\(`OmniForConditionalGeneration`, [\d.]+[KM] parameters\)", model_card.text)
    assert "parameters)" not in config_card.text
    for card in (model_card, config_card):
        assert card.data.pipeline_tag == "image-text-to-text"
        assert 'AutoModelForImageTextToText.from_pretrained("org/omni", trust_remote_code=True)' in card.text
        assert "AutoModel.from_pretrained" not in card.text
        assert "{{" not in card.text and "{%" not in card.text
        for text in shown:
            assert text in card.text, text
        for text in hidden:
            assert text not in card.text, text


def fake_config(model_type: str) -> PreTrainedConfig:
    """A bare config of a model type that is not ours."""
    return type("FakeConfig", (PreTrainedConfig,), {"model_type": model_type})()


TINY_CONFIGS = {
    "omni_vision": tiny_vision_config,
    "omni_video": tiny_video_config,
    "omni_audio": tiny_audio_config,
    "omni_audio_decoder": tiny_audio_decoder_config,
    "omni": tiny_omni_config,
}


@pytest.mark.parametrize("model_type, pipeline_tag, shown", [
    ("omni_vision", "image-feature-extraction", [
        "`[batch, 6, 32]`", "`siglip_vision_model`: hidden size 32, 2 layers",
    ]),
    ("omni_video", "feature-extraction", [
        "`[batch, T × 3, 32]`", "2 blocks of 4 heads", "4 SwiGLU experts of width 48, top-2",
        "4×4 patches per frame",
    ]),
    ("omni_audio", "feature-extraction", [
        "channels 8, 8, 16, 16, 32, 32", "`[batch, samples // 64, 32]`", "latent of rank 8, expanded to 2 grouped",
        "depthwise kernel 7", "embedding (12 dimensions)",
    ]),
    ("omni_audio_decoder", "text-to-audio", [
        "1 feed-forward Transformer blocks (RMLA attention with 4 heads", "20-bin mel spectrogram + 2-layer",
        "kernels 3;",
        "`[batch]` / `[batch, 8]`", "32 initial channels",
    ]),
    ("omni", "image-text-to-text", [
        "`llama`: hidden size 32, 2 layers, 4 attention heads, vocabulary of 34 tokens",
        "TiTok compression to 6 tokens",
        "| video | `<video>` (4) | 3 per real frame", "frames pooled 4 to 1: 62.5 tokens per second",
        "2 linear layers (width 32, gelu between them)", "a projector (32 → 32)", "`[batch, L, 34]`",
        "return_audio=True, speaker_ids=torch.tensor([0])",
        r'target_modules=r"language_model\..*\.(q_proj|v_proj)|.*_projector\.linears\.\d+"',
        'freeze=("text", "vision", "video", "audio", "speech_decoder")',
    ]),
])
def test_every_model_type_has_a_template_that_renders(model_type, pipeline_tag, shown):
    """Each template renders for the real config of its model type and shows that config's sizes, not defaults."""
    card = create_model_card(TINY_CONFIGS[model_type](), model_id=f"org/{model_type}")
    metadata = front_matter(str(card))
    assert metadata["pipeline_tag"] == pipeline_tag and model_type in metadata["tags"]
    assert f'from_pretrained("org/{model_type}"' in card.text and "## Citation" in card.text
    assert "{{" not in card.text and "{%" not in card.text
    for text in shown:
        assert text in card.text, text


@pytest.mark.parametrize("model_class, config, pipeline_tag, shown", [
    (OmniVideoForVideoClassification, tiny_video_config(num_labels=2, frame_causal=False), "video-classification",
     ["over every frame (`frame_causal=False`)", "| `logits` | `[batch, 2]` |"]),
    (OmniAudioForCTC, tiny_audio_config(use_quantizer=True), "automatic-speech-recognition",
     ["residual VQ with 3 codebooks × 16 entries", "| `logits` | `[batch, samples // 64, 32]` |"]),
    (OmniAudioForCTC, tiny_audio_config(attention_chunk_size=4, conv_module_causal=True, output_downsample_rate=2,
                                        tokenizer_norm_statistics="causal"), "automatic-speech-recognition",
     ["chunked attention (4-frame chunks, each seeing the 2 chunks before it)", "pooled 2 to 1: 125 output frames",
      "`model.stream_logits(pieces)`", "| `logits` | `[batch, ceil((samples // 64) / 2), 32]` |"]),
    (OmniAudioForAudioClassification, tiny_audio_config(num_labels=3, use_speaker_encoder=False),
     "audio-classification", ["3 classes", "| `logits` | `[batch, 3]` |"]),
    (OmniAudioDecoderModel, tiny_audio_decoder_config(num_speakers=0, postnet_layers=0), "text-to-audio",
     ["| speaker | a zero-shot", "→ 20-bin mel spectrogram |"]),
])
def test_model_cards_of_the_heads_follow_their_config(model_class, config, pipeline_tag, shown):
    card = create_model_card(model_class(config), model_id="org/head")
    assert card.data.pipeline_tag == pipeline_tag
    assert f'{model_class._auto_class}.from_pretrained("org/head", trust_remote_code=True)' in card.text
    for text in shown:
        assert text in card.text, text
    if not getattr(config, "use_speaker_encoder", True):
        assert "speaker encoder |" not in card.text


def test_templates_ship_inside_the_package():
    assert TEMPLATES_DIR == PACKAGE / "model_cards"
    assert {f"{model_type}.md" for model_type in MODEL_CARD_SPECS} <= {p.name for p in TEMPLATES_DIR.iterdir()}
    assert (ROOT / "model_cards").resolve() == TEMPLATES_DIR.resolve()  # the top-level folder is the same one
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"model_cards/*.md"' in pyproject
    with pytest.raises(ValueError, match="No model card template for model_type 'bert'"):
        create_model_card(fake_config("bert"))
