"""Tiny random-weight models for every task, built fully offline.

No model hub is reachable from CI or a laptop on a plane: tokenizers are built from a small
vocabulary written here with the `tokenizers` library, image and audio processors are
constructed from their classes. Hidden size 32, two layers: they load in a second and answer
with output of the real shape (the words are random, the shapes are not).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, get_args

from tmo.api.transformermodel import Task

_WORD_TEXT = (
    "the a an and or but if of to in on at by for with from as is are was were be been this "
    "that these those it its he she they we you i me my your our their his her them us not "
    "no yes all any some each every many much more most other such only own same so than too "
    "very can will just should now do does did have has had having get got make made go went "
    "see saw know think take come give find tell ask work seem feel try leave call email "
    "invoice meeting contract party agreement clause term law court legal review summary "
    "report model serve request reply customer support urgent spam order payment account "
    "refund issue ticket price product service team project deadline date time day week "
    "month year today tomorrow hello thanks please good bad great new old first last long "
    "short high low big small right left user assistant system question answer chat message "
    "text image audio speech word sentence document page section paper data number value "
    "result test example city london paris berlin john mary acme corp inc ltd shall must may "
    "liability indemnity termination notice "
)
WORDS = tuple(_WORD_TEXT.split())
LABELS = ("negative", "neutral", "positive")
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
IMAGE_LABELS = ("cat", "dog", "bird")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Every task the API accepts: one list, defined by the API model.
TASKS: tuple[str, ...] = get_args(Task)


def _corpus() -> list[str]:
    # Deterministic sentences so the BPE merges are the same on every machine.
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12)) for i in range(400)]


def _wordpiece_tokenizer() -> Any:
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    fast: Any = transformers.PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab_list = specials + list(dict.fromkeys([*WORDS, *chars, *("##" + c for c in chars)]))
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece()
    return fast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _bpe_tokenizer(*, add_bos_eos: bool) -> Any:
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    fast: Any = transformers.PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if add_bos_eos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
        )
    return fast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )


def _bert_config(vocab_size: int, **extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        **extra,
    )


def _labels(names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }


def build_tiny_model(task: str, out: Path, *, seed: int = 0) -> Path:
    """Write a tiny random-weight model of `task` with its tokenizer/processor into `out`."""
    import torch
    import transformers

    tf: Any = transformers  # untyped in places; keep mypy --strict quiet in one spot

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    model: Any
    processor: Any
    if task in ("text-classification", "token-classification", "feature-extraction"):
        tok = _wordpiece_tokenizer()
        if task == "text-classification":
            cfg = _bert_config(len(tok), **_labels(LABELS))
            model = tf.BertForSequenceClassification(cfg)
        elif task == "token-classification":
            cfg = _bert_config(len(tok), **_labels(NER_LABELS))
            model = tf.BertForTokenClassification(cfg)
        else:
            model = tf.BertModel(_bert_config(len(tok)))
        tok.model_max_length = 512
        tok.save_pretrained(out)
    elif task == "summarization":
        tok = _bpe_tokenizer(add_bos_eos=True)
        cfg = tf.BartConfig(
            vocab_size=len(tok),
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            # A short window makes "long document" cheap to produce in tests and demos.
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.eos_token_id,
            forced_eos_token_id=tok.eos_token_id,
        )
        model = tf.BartForConditionalGeneration(cfg)
        tok.model_max_length = 128
        tok.save_pretrained(out)
    elif task == "text-generation":
        tok = _bpe_tokenizer(add_bos_eos=False)
        tok.chat_template = CHAT_TEMPLATE
        cfg = tf.LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
        model = tf.LlamaForCausalLM(cfg)
        tok.model_max_length = 512
        tok.save_pretrained(out)
    elif task == "image-classification":
        cfg = tf.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **_labels(IMAGE_LABELS),
        )
        model = tf.ViTForImageClassification(cfg)
        processor = tf.ViTImageProcessor(size={"height": 32, "width": 32})
        processor.save_pretrained(out)
    else:  # speech-recognition
        chars = list(string.ascii_lowercase + "'")
        vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(chars)}}
        (out / "vocab.json").write_text(json.dumps(vocab))
        ctc_tok = tf.Wav2Vec2CTCTokenizer(
            str(out / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
        )
        fe = tf.Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, return_attention_mask=True
        )
        processor = tf.Wav2Vec2Processor(feature_extractor=fe, tokenizer=ctc_tok)
        processor.save_pretrained(out)
        cfg = tf.Wav2Vec2Config(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32, 32),
            conv_stride=(5, 2),
            conv_kernel=(10, 3),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            pad_token_id=0,
            ctc_loss_reduction="mean",
        )
        model = tf.Wav2Vec2ForCTC(cfg)
    model.eval()
    model.save_pretrained(out)
    return out
