"""Configurations of the three memmix model families.

* `MixerConfig` (model_type ``masked_mixer``): the causal masked-mixer language model.
* `MixerAutoencoderConfig` (model_type ``mixer_autoencoder``): one-pass autoencoder that squeezes a
  window of ``n_ctx`` tokens into one embedding and regenerates the window from it.
* `MemoryMixerConfig` (model_type ``memory_mixer``): a causal decoder that reads embeddings (memories)
  of earlier chunks made by an encoder.

All three accept the same core fields (``vocab_size``, ``hidden_size``, ``num_hidden_layers``, ``n_ctx``)
and the same mixer options, so ``XConfig(vocab_size=..., hidden_size=..., num_hidden_layers=..., n_ctx=...)``
builds a sensible model of each family. Every architecture variant of the seed is a field with
enumerated values; invalid values raise ``ValueError`` naming the value and what is allowed.

This file imports only ``transformers`` and a sibling file, so it can travel with a checkpoint as remote code.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from .quantization import EMBEDDING_FORMATS

BLOCK_TYPES = ("mixer", "transformer")
DECODER_INPUTS = ("repeat", "unroll")
UNROLL_SOURCES = ("embedding", "projected")
MEMORY_MODES = ("past", "oracle", "recurrent", "none")
COMBINE_MODES = ("token", "concat", "sum")
MEMORY_POSITIONS = ("fixed", "variable")
RECURRENT_STYLES = ("projected", "seed")
MEMORY_READS = ("slots", "attention")
INIT_STYLES = ("memmix", "pytorch")
MIXING_FIELDS = ("mixer_heads", "mixer_kernel_size")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}")


def _check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def _default(value, default):
    """``default`` where ``value`` is ``None``; any other value (``0`` included) is kept and validated."""
    return default if value is None else value


def _check_heads(width_name: str, width: int, heads_name: str, heads: int) -> None:
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 0:
        raise ValueError(f"{heads_name}={heads!r} must be an integer >= 0 (0 means one flat mixing matrix)")
    if heads > 0 and width % heads != 0:
        raise ValueError(f"{heads_name}={heads} must divide {width_name}={width}")


class MemmixBaseConfig(PreTrainedConfig):
    """Fields shared by every memmix family.

    Args:
        vocab_size: number of token ids.
        hidden_size: width of the (decoder) token vectors.
        num_hidden_layers: number of blocks (in the autoencoder: of encoder and of decoder each).
        n_ctx: length the mixing matrices are built for (in the memory model: the chunk length).
        intermediate_size: feed-forward width; default ``4 * hidden_size``. Stacks of another width
            scale it in proportion.
        mixer_heads: 0 = one flat ``n_ctx x n_ctx`` mixing matrix shared by all channels; ``h > 0`` =
            multi-headed mixer (projection to ``h`` heads, one causal matrix each, projection back).
        mixer_kernel_size: 1 = plain matrix mixing; ``k > 1`` = the seed's ``Conv1d(n_ctx, n_ctx, k)`` with
            tokens as channels, so each output element also sees ``k`` neighbouring hidden elements of
            every earlier token.
        num_attention_heads: heads of the Llama blocks used by ``"transformer"`` stacks.
        layer_norm_eps: epsilon of the layer norms.
        hidden_dropout: dropout probability on the output of each mixer block's token mixing and feed-forward
            (before the residual add), in training mode only; ``0.0`` (the default, as in the seed) adds no
            dropout module at all. The Llama blocks of ``"transformer"`` stacks do not read it.
        initializer_range: std of the normal init of linear and embedding weights.
        embedding_format: optional storage format (one of ``EMBEDDING_FORMATS``) of the embeddings an encoder
            hands on (the decoder reads them as stored); ``None`` keeps float embeddings. Checkpoints saved
            before this name was chosen call it ``embedding_quantization``; that name is still read.
        embedding_noise: quantization-aware training: ``None``, or a format whose half-step uniform noise
            is added to the embedding in training mode.
        embedding_noise_scale: quantization-aware training with a fixed absolute step, the seed's variant
            (``torch.rand(...) * 2**-3`` added after ``down`` for an e4m3 target): ``None``, or a width ``s > 0``;
            in training mode noise ``U[0, s)`` is added (not centred, as in the seed), where
            ``embedding_noise_position`` says. Exclusive with ``embedding_noise`` (a step per format).
        embedding_noise_position: ``"embedding"`` adds that noise to the (bottlenecked) embedding;
            ``"pre_bottleneck"`` is the seed's variant: noise before the bottleneck, with a residual
            across it.
        init_style: ``"memmix"`` (linear and embedding weights ``N(0, initializer_range)``, biases zero) or
            ``"pytorch"``, what the seed's research code keeps: PyTorch's defaults (linear weights and biases
            uniform in ``+-1/sqrt(fan_in)``, embeddings ``N(0, 1)``), except the Llama blocks of
            ``"transformer"`` stacks, which keep transformers' init as the seed's ``LlamaModel`` does. Mixing
            matrices and layer norms are initialized the same way in both.
    """

    model_type = ""

    vocab_size: int = 8000
    hidden_size: int = 256
    num_hidden_layers: int = 4
    n_ctx: int = 512
    intermediate_size: int | None = None
    mixer_heads: int = 0
    mixer_kernel_size: int = 1
    num_attention_heads: int = 4
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    embedding_format: str | None = None
    embedding_noise: str | None = None
    embedding_noise_scale: float | None = None
    embedding_noise_position: str = "embedding"
    init_style: str = "memmix"

    def __post_init__(self, **kwargs):
        if "embedding_quantization" in kwargs:  # the name checkpoints saved before the rename use
            legacy = kwargs.pop("embedding_quantization")
            if legacy is not None:
                _check_choice("embedding_quantization", legacy, EMBEDDING_FORMATS)  # name the field the user gave
                self.embedding_format = legacy
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "n_ctx"):
            _check_positive(name, getattr(self, name))  # the defaults below are computed from these
        self.fill_defaults()
        super().__post_init__(**kwargs)
        self.validate_memmix()

    def fill_defaults(self) -> None:
        """Replace ``None`` (only ``None``: ``0`` is an invalid value, not a request for the default) by the
        size derived from the other fields."""
        self.intermediate_size = _default(self.intermediate_size, 4 * self.hidden_size)

    def validate_memmix(self) -> None:
        """Raise ``ValueError`` for settings no memmix model can be built from."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "n_ctx", "intermediate_size"):
            _check_positive(name, getattr(self, name))
        _check_positive("mixer_kernel_size", self.mixer_kernel_size)
        _check_positive("num_attention_heads", self.num_attention_heads)
        self.validate_mixing()
        dropout = self.hidden_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"hidden_dropout={dropout!r} must be a probability in [0, 1)")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}"
            )
        for name in ("embedding_format", "embedding_noise"):
            value = getattr(self, name)
            if value is not None:
                _check_choice(name, value, EMBEDDING_FORMATS)
        _check_choice("embedding_noise_position", self.embedding_noise_position, ("embedding", "pre_bottleneck"))
        self.validate_noise_scale()
        _check_choice("init_style", self.init_style, INIT_STYLES)
        for name in ("pad_token_id", "bos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}={value} is outside the vocabulary [0, {self.vocab_size})")

    def validate_mixing(self) -> None:
        """Check the mixing settings of every mixer stack (one stack here: ``mixer_heads`` against ``hidden_size``;
        the autoencoder and the memory model check each stack's own)."""
        _check_heads("hidden_size", self.hidden_size, "mixer_heads", self.mixer_heads)

    def validate_noise_scale(self) -> None:
        scale = self.embedding_noise_scale
        if scale is None:
            return
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise ValueError(f"embedding_noise_scale={scale!r} must be a finite number > 0 (or None for no such noise)")
        if self.embedding_noise is not None:
            raise ValueError(
                f"embedding_noise={self.embedding_noise!r} and embedding_noise_scale={scale!r} are both set; choose "
                "one: a step per storage format, or the seed's fixed absolute step"
            )

    def stack_mixing(self, stack: str) -> dict[str, int]:
        """Mixing settings ``{"mixer_heads": h, "mixer_kernel_size": k}`` of the stack named ``stack``
        (``"encoder"`` / ``"decoder"``): its own ``{stack}_mixer_heads`` / ``{stack}_mixer_kernel_size`` where the
        family has them and they are set, else the shared ``mixer_heads`` / ``mixer_kernel_size``."""
        return {name: self.mixing_source(stack, name)[1] for name in MIXING_FIELDS}

    def mixing_source(self, stack: str, name: str) -> tuple[str, int]:
        """The field that sets mixing setting ``name`` of ``stack``, and its value (for error messages)."""
        own = f"{stack}_{name}"
        value = getattr(self, own, None)
        return (name, getattr(self, name)) if value is None else (own, value)

    def check_stack_mixing(self, stack: str, width_name: str, width: int) -> None:
        """Raise ``ValueError`` naming the field that gives the mixer stack ``stack`` an invalid setting."""
        heads_name, heads = self.mixing_source(stack, "mixer_heads")
        kernel_name, kernel = self.mixing_source(stack, "mixer_kernel_size")
        _check_positive(kernel_name, kernel)
        _check_heads(width_name, width, heads_name, heads)

    @property
    def embedding_quantization(self) -> str | None:
        """Former name of `embedding_format` (read and written through to it)."""
        return self.embedding_format

    @embedding_quantization.setter
    def embedding_quantization(self, value: str | None) -> None:
        self.embedding_format = value

    @property
    def max_sequence_length(self) -> int:
        """Most tokens one forward pass accepts (the memory model overrides this)."""
        return self.n_ctx

    def ff_size(self, width: int) -> int:
        """Feed-forward width for a stack of ``width`` channels (``intermediate_size`` scaled)."""
        return max(1, self.intermediate_size * width // self.hidden_size)


class MixerConfig(MemmixBaseConfig):
    """Causal masked-mixer language model (`MixerForCausalLM`, `MixerModel`).

    Args:
        block_type: ``"mixer"`` (masked token mixing) or ``"transformer"`` (Llama blocks), the latter
            for like-for-like comparisons inside one code base.
    """

    model_type = "masked_mixer"

    block_type: str = "mixer"

    def validate_memmix(self) -> None:
        super().validate_memmix()
        _check_choice("block_type", self.block_type, BLOCK_TYPES)


class MixerAutoencoderConfig(MemmixBaseConfig):
    """One-pass autoencoder (`MixerAutoencoder`).

    Args:
        encoder_layers / decoder_layers: depth of each half; default ``num_hidden_layers``.
        encoder_type / decoder_type: ``"mixer"`` or ``"transformer"`` (Llama blocks), independently.
        encoder_causal / decoder_causal: causal masks (the seed's finding: masked trains better; no masks at
            all is unstable).
        decoder_input: ``"repeat"`` (the embedding at every position) or ``"unroll"`` (position ``i`` gets
            the window ``v[(i + j) % len(v)]`` for ``j < unroll_window`` of a vector ``v``, then a shared
            projection ``up``).
        unroll_source: the vector ``v`` that ``"unroll"`` slides over. ``"embedding"``: the (bottlenecked)
            embedding itself. ``"projected"``: the seed's order: the embedding projected back to the full
            ``hidden_size`` first (``bottleneck_up``, present only with a bottleneck), then unrolled; with no
            bottleneck both are the same. Only for ``decoder_input="unroll"``.
        embedding_dim: size of the embedding; smaller than ``hidden_size`` adds a bottleneck
            (``down`` / ``up`` projections). Default ``hidden_size``.
        decoder_hidden_size: decoder width; default ``hidden_size`` (the seed compares a transformer
            decoder of half the mixer's width).
        unroll_window: width of each unrolled slice; default half the unrolled vector (``embedding_dim // 2``,
            or ``hidden_size // 2`` with ``unroll_source="projected"``) as in the seed.
        encoder_mixer_heads / encoder_mixer_kernel_size / decoder_mixer_heads / decoder_mixer_kernel_size: the
            mixing settings of each stack; ``None`` (default) = the shared ``mixer_heads`` / ``mixer_kernel_size``.
        mixer_kernel_size: defaults to 64 for the autoencoder (1 in the other families): the setting that
            regenerates held-out windows best (docs/FINDINGS.md: F4, the recipe sweep and the 20-minute recipe
            runs, 95.7 % and 94.9 % on held-out 32-token windows; best from 16 to 64 tokens in the window
            sweep). For windows under 16 tokens prefer ``mixer_heads=4, mixer_kernel_size=1``: at 8 tokens
            k = 64 stays near the unigram plateau (19 % and 24 %, two seeds) where 4 heads reach 96 %.
            Checkpoints store their kernel, so those saved with the former defaults of 1 or 8 load unchanged.
    """

    model_type = "mixer_autoencoder"

    mixer_kernel_size: int = 64

    encoder_layers: int | None = None
    decoder_layers: int | None = None
    encoder_type: str = "mixer"
    decoder_type: str = "mixer"
    encoder_causal: bool = True
    decoder_causal: bool = True
    decoder_input: str = "repeat"
    unroll_source: str = "embedding"
    embedding_dim: int | None = None
    decoder_hidden_size: int | None = None
    unroll_window: int | None = None
    encoder_mixer_heads: int | None = None
    encoder_mixer_kernel_size: int | None = None
    decoder_mixer_heads: int | None = None
    decoder_mixer_kernel_size: int | None = None

    def fill_defaults(self) -> None:
        super().fill_defaults()
        self.encoder_layers = _default(self.encoder_layers, self.num_hidden_layers)
        self.decoder_layers = _default(self.decoder_layers, self.num_hidden_layers)
        self.embedding_dim = _default(self.embedding_dim, self.hidden_size)
        self.decoder_hidden_size = _default(self.decoder_hidden_size, self.hidden_size)
        _check_positive("embedding_dim", self.embedding_dim)
        self.unroll_window = _default(self.unroll_window, max(1, self.unroll_width // 2))

    @property
    def unroll_width(self) -> int:
        """Length of the vector ``decoder_input="unroll"`` slides over (see ``unroll_source``)."""
        return self.hidden_size if self.unroll_source == "projected" else self.embedding_dim

    def validate_memmix(self) -> None:
        super().validate_memmix()
        for name in ("encoder_layers", "decoder_layers", "embedding_dim", "decoder_hidden_size", "unroll_window"):
            _check_positive(name, getattr(self, name))
        _check_choice("encoder_type", self.encoder_type, BLOCK_TYPES)
        _check_choice("decoder_type", self.decoder_type, BLOCK_TYPES)
        _check_choice("decoder_input", self.decoder_input, DECODER_INPUTS)
        _check_choice("unroll_source", self.unroll_source, UNROLL_SOURCES)
        if self.unroll_source != "embedding" and self.decoder_input != "unroll":
            raise ValueError(
                f"unroll_source={self.unroll_source!r} only applies to decoder_input='unroll', but decoder_input="
                f"{self.decoder_input!r}"
            )
        if self.decoder_type == "transformer" and self.decoder_hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must divide "
                f"decoder_hidden_size={self.decoder_hidden_size}"
            )
        if self.unroll_window > self.unroll_width:
            width_name = "hidden_size" if self.unroll_source == "projected" else "embedding_dim"
            raise ValueError(
                f"unroll_window={self.unroll_window} must not exceed {width_name}={self.unroll_width} (the vector "
                f"unroll_source={self.unroll_source!r} slides over)"
            )

    def validate_mixing(self) -> None:
        self.check_stack_mixing("encoder", "hidden_size", self.hidden_size)
        self.check_stack_mixing("decoder", "decoder_hidden_size", self.decoder_hidden_size)


class MemoryMixerConfig(MemmixBaseConfig):
    """Memory model (`MemoryMixerForCausalLM`): an encoder embeds chunks, a causal decoder reads them.

    ``n_ctx`` is the chunk length (tokens per encoder and per decoder pass); the model accepts up to
    ``n_ctx * (max_memories + 1)`` tokens.

    Args:
        memory_mode: ``"past"`` (chunk ``c`` reads the embeddings of chunks ``1..c-1``), ``"oracle"``
            (embedding-augmented causal LM: each chunk reads the embedding of *itself*; its storage cost
            is charged by the normalized loss) or ``"recurrent"`` (RMT-style baseline: the decoder's own
            last state of chunk ``c-1`` is the memory of chunk ``c``), or ``"none"``: the no-memory baseline with
            the ``"past"`` decoder's exact layout (same ``n_ctx`` with the memory slots, same positions, the same
            parameters without the encoder), its slots filled as for a chunk with nothing before it.
        recurrent_style: with ``memory_mode="recurrent"``: ``"projected"`` (the memory is a learned projection
            of the decoder's last state, chunk 0 reads a learned start vector) or ``"seed"``, the seed's
            ``RecurrentMemoryMixer``: the previous chunk's last state itself (no projection, zeros for chunk 0)
            is the leading memory slot and is also written into the slot of the chunk's last token (that token
            is then only ever a target); ``combine="token"`` only.
        combine: ``"token"`` (memories are extra leading positions), ``"concat"`` (the memory is appended
            to every token vector, token vectors narrowed to ``hidden_size - memory_concat_dim``) or
            ``"sum"`` (added to every token vector). ``concat``/``sum`` carry one memory per position, so
            with ``memory_mode="past"`` they need ``max_memories=1``.
        memory_positions: ``"fixed"`` (memories fill the first ``max_memories`` slots, then padding, then
            the chunk) or ``"variable"`` (``c-1`` memories directly followed by the chunk).
        max_memories: number of earlier chunks the decoder can hold.
        encoder_hidden_size / encoder_layers / encoder_type / encoder_causal: the encoder, which may be
            narrower than the decoder (its embedding is projected).
        encoder_mixer_heads / encoder_mixer_kernel_size / decoder_mixer_heads / decoder_mixer_kernel_size: the
            mixing settings of each stack; ``None`` (default) = the shared ``mixer_heads`` / ``mixer_kernel_size``.
            (The seed's memory models use an encoder with heads or ``k > 1`` and a flat ``k = 1`` decoder.)
        memory_dim: optional memory bottleneck (the autoencoder's ``embedding_dim``).
        decoder_type: ``"mixer"`` or ``"transformer"``.
        freeze_encoder: keep the encoder's weights fixed (e.g. taken from a trained autoencoder).
        memory_concat_dim: channels given to the memory with ``combine="concat"``; default ``hidden_size // 4``.
        memory_read: how the decoder reads its memories. ``"slots"`` (default, as in the seed): only through
            ``combine``, so a mixer decoder weighs each slot with fixed, input-independent mixing weights.
            ``"attention"``: in addition, a content-addressed read (`MemoryRead`) before decoder block
            ``memory_read_layer``: every position attends over the memory slots it can see, plus a learned
            "nothing" slot, and adds what it reads to its hidden state; its output projection starts at zero, so
            an untrained read changes nothing. Mixer decoders only.
        memory_read_layer: the decoder block the read comes before (0 = on the decoder's inputs).
    """

    model_type = "memory_mixer"

    memory_mode: str = "past"
    recurrent_style: str = "projected"
    combine: str = "token"
    memory_positions: str = "fixed"
    max_memories: int = 3
    encoder_hidden_size: int | None = None
    encoder_layers: int | None = None
    encoder_type: str = "mixer"
    encoder_causal: bool = True
    memory_dim: int | None = None
    decoder_type: str = "mixer"
    freeze_encoder: bool = False
    memory_concat_dim: int | None = None
    encoder_mixer_heads: int | None = None
    encoder_mixer_kernel_size: int | None = None
    decoder_mixer_heads: int | None = None
    decoder_mixer_kernel_size: int | None = None
    memory_read: str = "slots"
    memory_read_layer: int = 0

    def fill_defaults(self) -> None:
        super().fill_defaults()
        self.encoder_hidden_size = _default(self.encoder_hidden_size, self.hidden_size)
        self.encoder_layers = _default(self.encoder_layers, self.num_hidden_layers)
        self.memory_dim = _default(self.memory_dim, self.encoder_hidden_size)
        self.memory_concat_dim = _default(self.memory_concat_dim, max(1, self.hidden_size // 4))

    def validate_memmix(self) -> None:
        super().validate_memmix()
        _check_choice("memory_mode", self.memory_mode, MEMORY_MODES)
        _check_choice("recurrent_style", self.recurrent_style, RECURRENT_STYLES)
        _check_choice("combine", self.combine, COMBINE_MODES)
        _check_choice("memory_positions", self.memory_positions, MEMORY_POSITIONS)
        _check_choice("encoder_type", self.encoder_type, BLOCK_TYPES)
        _check_choice("decoder_type", self.decoder_type, BLOCK_TYPES)
        for name in ("max_memories", "encoder_hidden_size", "encoder_layers", "memory_dim"):
            _check_positive(name, getattr(self, name))
        if self.encoder_type == "transformer" and self.encoder_hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must divide "
                f"encoder_hidden_size={self.encoder_hidden_size}"
            )
        if self.memory_mode in ("past", "none") and self.combine != "token" and self.max_memories != 1:
            raise ValueError(
                f"combine={self.combine!r} carries one memory per position, but memory_mode={self.memory_mode!r} "
                f"with max_memories={self.max_memories} has several; use combine='token' or max_memories=1"
            )
        if self.recurrent_style != "projected" and self.memory_mode != "recurrent":
            raise ValueError(
                f"recurrent_style={self.recurrent_style!r} only applies to memory_mode='recurrent', but "
                f"memory_mode={self.memory_mode!r}"
            )
        if self.recurrent_style == "seed" and self.combine != "token":
            raise ValueError(
                f"recurrent_style='seed' writes the memory into token slots, which needs combine='token', but "
                f"combine={self.combine!r}"
            )
        if self.freeze_encoder and self.memory_mode == "none":
            raise ValueError("freeze_encoder=True, but memory_mode='none' has no encoder to freeze")
        self.validate_memory_read()
        if self.combine == "concat" and not 0 < self.memory_concat_dim < self.hidden_size:
            raise ValueError(
                f"memory_concat_dim={self.memory_concat_dim} must be between 1 and hidden_size-1 "
                f"({self.hidden_size - 1})"
            )

    def validate_memory_read(self) -> None:
        _check_choice("memory_read", self.memory_read, MEMORY_READS)
        if self.memory_read == "slots":
            return
        if self.decoder_type != "mixer":
            raise ValueError(
                f"memory_read={self.memory_read!r} is built for mixer decoders, but decoder_type="
                f"{self.decoder_type!r} (a transformer decoder already reads its memory slots by attention); "
                "use memory_read='slots'"
            )
        if not 0 <= self.memory_read_layer < self.num_hidden_layers:
            raise ValueError(
                f"memory_read_layer={self.memory_read_layer} must name a decoder block, 0 to "
                f"{self.num_hidden_layers - 1} (num_hidden_layers={self.num_hidden_layers})"
            )

    def validate_mixing(self) -> None:
        if self.has_encoder:
            self.check_stack_mixing("encoder", "encoder_hidden_size", self.encoder_hidden_size)
        self.check_stack_mixing("decoder", "hidden_size", self.hidden_size)

    @property
    def has_encoder(self) -> bool:
        """Whether the model has an encoder (``"recurrent"`` and ``"none"`` have none)."""
        return self.memory_mode in ("past", "oracle")

    @property
    def memory_width(self) -> int:
        """Width of a memory as the decoder reads it: ``memory_concat_dim`` with ``combine="concat"``, else
        ``hidden_size``."""
        return self.memory_concat_dim if self.combine == "concat" else self.hidden_size

    @property
    def token_width(self) -> int:
        """Width of the decoder's token vectors: narrowed by ``memory_concat_dim`` with ``combine="concat"``."""
        return self.hidden_size - self.memory_concat_dim if self.combine == "concat" else self.hidden_size

    @property
    def num_memory_slots(self) -> int:
        """Leading decoder positions reserved for memories (token combination only)."""
        if self.combine != "token":
            return 0
        return self.max_memories if self.memory_mode in ("past", "none") else 1

    @property
    def decoder_n_ctx(self) -> int:
        """Length the decoder's mixing matrices are built for."""
        return self.n_ctx + self.num_memory_slots

    @property
    def max_sequence_length(self) -> int:
        """Most tokens the model reads: the current chunk and ``max_memories`` earlier ones."""
        return self.n_ctx * (self.max_memories + 1)


__all__ = ["MixerConfig", "MixerAutoencoderConfig", "MemoryMixerConfig", "MemmixBaseConfig"]
