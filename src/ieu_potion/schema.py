"""The schema of every parameter: one validation pass over the whole parameter tree.

Each block is a pydantic model (or a settings class of the module that uses it: the
training recipe, IEU, Potion, each attack and defence), so a type, range, finiteness or
unknown-key error names the parameter's path, and a choice lists the valid values.
``Parameters`` adds the cross-references between blocks: every namespace a pipeline runs
is listed in ``data_poisoning.attacks`` and has its ``<namespace>.attack`` block; the shares
Potion, EU and the trade-off name are drawn.  ``validate_parameters`` runs before any
pipeline is built and again, on the parameters the catalog holds, before any node runs
(hooks.py).  docs/parameters.md is generated from this module
(``scripts/parameter_reference.py``).
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ieu_potion.attacks.poison import AttackConfig, share_key
from ieu_potion.attacks.stega import CodecConfig
from ieu_potion.config import (
    Block,
    Count,
    Natural,
    ParameterError,
    Share,
    Text,
    canonical,
    distinct,
    parameter_error,
    with_own_entries,
)
from ieu_potion.defences.ieu import IEUSettings
from ieu_potion.defences.registry import DEFENCES, TrustedSettings, baseline_methods
from ieu_potion.models.factory import has_pretrained_weights, vit_depth
from ieu_potion.results import ONE_SHOT
from ieu_potion.training.engine import FinetuneConfig
from ieu_potion.training.setup import ModelBlock
from ieu_potion.unlearning.potion import PotionConfig

PIPELINES_WITH_NAMESPACES = ("ieu_finetune", "baselines", "potion_unlearning")


def _nonempty(values: tuple) -> tuple:
    if not values:
        raise ValueError("must name at least one entry")
    return values


def seed_list(seeds: Any) -> list[int]:
    """The run's seeds from ``seeds``: a list, or a count n for seeds 0..n-1 (``kedro run
    --params seeds=3``: Kedro splits ``--params`` at commas, so no list can be typed)."""
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


# Seeds one run may repeat every namespace over (each seed adds a copy of every per-attack
# node); more are run in batches of seed lists, which share the results archive.
MAX_SEEDS = 100

# What a top-level string parameter (a path the catalog reads) is called.
CATALOG_PATH = re.compile(r"_(root|path|dir|url)$")

# What an attack namespace may be called (it becomes folder names and Kedro namespaces).
NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


Names = Annotated[
    tuple[Text, ...], Field(description="attack namespaces, each with a `<namespace>.attack` block")
]


class SplitParams(Block):
    """``data_split``: the clean pretraining split no attack touches."""

    pretrain_fraction: Annotated[float, Strict(), Field(ge=0, lt=1)]
    seed: Natural = 0


class DiscoveryParams(Block):
    """``data_poisoning.discovery``: the nested shares of the poison Potion is given."""

    shares: tuple[Share, ...]
    seed: Natural = 0

    @field_validator("shares")
    @classmethod
    def _distinct_keys(cls, shares: tuple[float, ...]) -> tuple[float, ...]:
        """Distinct shares with distinct subset keys: 0.1 and 0.1000001 both name
        ``share_0.1`` and would collapse into one subset."""
        keys: dict[str, float] = {}
        for share in distinct(_nonempty(shares)):
            if share_key(share) in keys:
                raise ValueError(
                    f"{keys[share_key(share)]} and {share} both make the subset "
                    f"{share_key(share)!r}; use shares that differ in the first 6 digits"
                )
            keys[share_key(share)] = share
        return shares


class DataPoisoningParams(Block):
    attacks: Names
    stega_codec: CodecConfig = Field(default_factory=CodecConfig)
    discovery: DiscoveryParams
    gallery_examples: Count = 6

    _check = field_validator("attacks")(lambda cls, v: distinct(v))


class PipelineParams(Block):
    """``ieu_finetune`` / ``potion_unlearning``: the namespaces a pipeline runs."""

    attacks: Names = ()

    _check = field_validator("attacks")(lambda cls, v: distinct(v))


class _BaselinesBase(Block):
    attacks: Names = ()
    methods: tuple[Literal[tuple(baseline_methods())], ...] = ("none",)
    trusted: TrustedSettings = Field(default_factory=TrustedSettings)

    _check_attacks = field_validator("attacks")(lambda cls, v: distinct(v))
    _check_methods = field_validator("methods")(lambda cls, v: distinct(_nonempty(v)))


# One settings block per registered defence: a new defence brings its block along.
BaselinesParams = create_model(
    "BaselinesParams",
    __base__=_BaselinesBase,
    __doc__="``baselines``: the defences compared with IEU and their settings.",
    **{
        name: (DEFENCES[name].settings, Field(default_factory=DEFENCES[name].settings))
        for name in baseline_methods()
    },
)


class NamespaceParams(Block):
    """``<namespace>``: one attack's block, optionally with its own Potion entries and its
    own training regime (entries over the finetune block)."""

    attack: AttackConfig
    potion: dict[str, Any] | None = Field(None, description="entries over the potion block")
    finetune: dict[str, Any] | None = Field(
        None, description="entries over the finetune block: this attack's training regime"
    )


class Parameters(Block):
    """Every parameter of a run.  Other top-level keys are attack namespaces (mappings
    with an ``attack`` block), strings the catalog reads (paths named ``*_root``,
    ``*_path``, ``*_dir`` or ``*_url``, given with ``--params``), or YAML anchors'
    holders (``_name``)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    dataset_name: Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    seeds: (
        Annotated[list[Natural], Field(max_length=MAX_SEEDS)]
        | Annotated[int, Strict(), Field(ge=1, le=MAX_SEEDS)]
    ) = Field([0], description=f"a list, or a count n: 0..n-1; at most {MAX_SEEDS} seeds a run")
    backbone_per_seed: Annotated[bool, Strict()] = False
    deterministic: Annotated[bool, Strict()] = False
    distributed: Annotated[bool, Strict()] = Field(
        False, description="train data-parallel over the ranks torchrun starts"
    )
    model: ModelBlock
    finetune: FinetuneConfig
    data_split: SplitParams
    data_poisoning: DataPoisoningParams
    ieu_finetune: PipelineParams = Field(default_factory=PipelineParams)
    ieu: IEUSettings
    potion_unlearning: PipelineParams = Field(default_factory=PipelineParams)
    potion: PotionConfig
    baselines: BaselinesParams = Field(default_factory=BaselinesParams)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | int) -> list[int]:
        return seed_list(value if isinstance(value, int) else distinct(_nonempty(value)))

    _namespaces: dict[str, NamespaceParams] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _cross_references(self) -> Parameters:
        self._namespaces = namespaces = self._validate_namespaces()
        listed = self.data_poisoning.attacks
        missing = [ns for ns in listed if ns not in namespaces]
        if missing:
            raise ValueError(
                f"data_poisoning.attacks lists {missing} but the parameters have no "
                "'<namespace>.attack' block for them"
            )
        for block in PIPELINES_WITH_NAMESPACES:
            unknown = [ns for ns in getattr(self, block).attacks if ns not in listed]
            if unknown:
                raise ValueError(
                    f"{block}.attacks names {unknown}, which data_poisoning.attacks does not "
                    f"list; listed: {', '.join(listed) or 'none'}"
                )
        for ns in self.potion_unlearning.attacks:
            self._check_potion(ns, namespaces[ns])
        for ns in (ns for ns, block in namespaces.items() if block.finetune is not None):
            try:
                self.finetune_for(ns)
            except ParameterError as exc:
                raise ValueError(f"{exc} (the entries over the finetune block)") from None
        self._check_models()
        return self

    def _check_models(self) -> None:
        """What the model settings need of the rest: a pretraining split where a model is
        pretrained, weights timm has where it is asked for them, and a gate no deeper than
        the ViT it is cut from."""
        pretrained = self.model.weights.source == "pretrain" or self.model.gate_pretrain
        if pretrained and self.data_split.pretrain_fraction == 0:
            raise ValueError(
                "data_split.pretrain_fraction is 0, but model.weights.source 'pretrain' (or "
                "model.gate_pretrain) trains on that split; give it a share, or another "
                "weight source"
            )
        robust = self.model.robust.name
        if self.model.weights.source == "timm" and not has_pretrained_weights(robust):
            raise ValueError(
                f"model.weights.source 'timm', but timm has no pretrained weights for "
                f"model.robust.name {robust!r}; give 'scratch', 'pretrain' or 'checkpoint'"
            )
        depth = self.ieu.defence.gate_depth
        if self.model.gate_pretrain is not None:
            cut_from, blocks = "model.gate_pretrain.depth", self.model.gate_pretrain.depth
        else:
            cut_from, blocks = "model.robust", vit_depth(self.model.robust.spec(2))
        if blocks is not None and depth > blocks:
            raise ValueError(
                f"ieu.defence.gate_depth {depth} exceeds the {blocks} blocks of the ViT the "
                f"gate is cut from ({cut_from})"
            )

    def namespaces(self) -> dict[str, NamespaceParams]:
        """Every attack namespace block, by name (validated with the rest)."""
        return dict(self._namespaces)

    def potion_for(self, namespace: str) -> PotionConfig:
        """The Potion settings of ``namespace``: the ``potion`` block with the namespace's
        own ``<namespace>.potion`` entries over it (the one place they are merged)."""
        own = self._namespaces[namespace].potion
        return with_own_entries(PotionConfig, self.potion, own, f"{namespace}.potion")

    def finetune_for(self, namespace: str) -> FinetuneConfig:
        """The training recipe of ``namespace``'s models: the ``finetune`` block with the
        namespace's own ``<namespace>.finetune`` entries over it (``augment`` merged key by
        key)."""
        own = self._namespaces[namespace].finetune
        return with_own_entries(FinetuneConfig, self.finetune, own, f"{namespace}.finetune")

    def _validate_namespaces(self) -> dict[str, NamespaceParams]:
        """Every attack namespace block, validated (a top-level key that is none of the
        blocks above and no ``_anchor`` must be one).  A namespace names folders and Kedro
        namespaces, so it is letters, digits, ``_`` and ``-`` only: no ``..`` that would
        leave its layer folder, no dot that would shadow another block's ``params:`` entry."""
        found = {}
        for name, value in (self.model_extra or {}).items():
            # YAML anchors' holders, and paths the catalog reads (`--params gtsrb_root=...`)
            if name.startswith("_") or isinstance(value, str) and CATALOG_PATH.search(name):
                continue
            if isinstance(value, str):
                close = difflib.get_close_matches(name, list(type(self).model_fields), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(
                    f"unknown parameter {name!r} (= {value!r}): a top-level string is a path "
                    "the catalog reads through ${runtime_params:...}, named <name>_root, "
                    f"_path, _dir or _url{hint}"
                )
            if not isinstance(value, dict) or "attack" not in value:
                raise ValueError(
                    f"unknown parameter block {name!r}: neither a block of the parameter "
                    "reference (docs/parameters.md), nor an attack namespace (a mapping with "
                    "an 'attack' block), nor a path for the catalog (a string)"
                )
            if not NAMESPACE.fullmatch(name):
                raise ValueError(
                    f"attack namespace {name!r}: use letters, digits, '_' and '-' only, "
                    "starting with a letter or digit ([A-Za-z0-9][A-Za-z0-9_-]*)"
                )
            try:
                found[name] = NamespaceParams.model_validate(value)
            except ValidationError as exc:
                raise ValueError(str(parameter_error(exc, name, NamespaceParams))) from None
        return found

    def _check_potion(self, namespace: str, block: NamespaceParams) -> None:
        """The namespace's Potion settings (its entries over the shared block) and the
        shares they name, which must be drawn by data_poisoning.discovery."""
        where = f"{namespace}.potion" if block.potion else "potion"
        try:
            potion = self.potion_for(namespace)
        except ParameterError as exc:
            raise ValueError(f"{where} (over the potion block): {exc}") from None
        if potion.discovery == "realistic":
            return
        drawn = [share_key(s) for s in sorted(self.data_poisoning.discovery.shares)]
        drawn.append(ONE_SHOT)
        run = potion.shares or tuple(drawn)
        for name, wanted, among in (
            ("shares", potion.shares, drawn),
            ("eu_shares", potion.eu_shares, run),
            ("tradeoff_shares", potion.tradeoff_shares, run),
        ):
            missing = sorted(set(wanted) - set(among))
            if missing:
                raise ValueError(
                    f"{where}.{name} names {missing}, which namespace {namespace!r} does not "
                    f"run (data_poisoning.discovery.shares and potion.shares); "
                    f"available: {', '.join(among)}"
                )


# Parameter trees validated in this process, by their canonical JSON text.
_VALIDATED: dict[str, Parameters] = {}


def validate_parameters(params: dict[str, Any]) -> Parameters:
    """The run's parameters, validated as a whole; a ``ParameterError`` names every
    parameter that fails, by its path.  A tree is validated once per process: building the
    pipelines and the check before the run (hooks.py) share the result."""
    if not isinstance(params, dict):
        raise ParameterError(f"the parameters must be a mapping, got {type(params).__name__}")
    key = canonical(params)
    if key not in _VALIDATED:
        try:
            _VALIDATED[key] = Parameters.model_validate(params)
        except ValidationError as exc:
            raise parameter_error(exc, "", Parameters) from None
    return _VALIDATED[key]


def typed_blocks(params: Parameters) -> dict[str, Any]:
    """Every block of the validated tree that is a settings object, by the name Kedro gives
    its parameter dataset (``params:finetune``, ``params:ieu.defence``,
    ``params:<namespace>.attack``): what the nodes are handed instead of mappings."""
    found: dict[str, Any] = {}

    def visit(value: Any, path: str) -> None:
        fields = getattr(type(value), "__pydantic_fields__", None)
        if not isinstance(fields, dict):
            return
        if path:
            found[f"params:{path}"] = value
        for name in fields:
            visit(getattr(value, name), f"{path}.{name}" if path else name)

    visit(params, "")
    for name, block in params.namespaces().items():
        visit(block, name)
    return found


def check_source_fit(
    params: Parameters, classes: int | None, train_images: int | None, source: str
) -> None:
    """Refuse, before any work, the poisoning settings that the source data set ``source``
    (a catalog entry, with ``classes`` classes and at most ``train_images`` training
    images; None where unknown) cannot meet: a ``target_class`` that is no class of it,
    a ``count`` of poisoned samples beyond its training images.  The poisoning node
    checks ``count`` again against the finetuning split, which is smaller."""
    problems = []
    for name in params.data_poisoning.attacks:
        attack = params.namespaces()[name].attack
        if classes is not None and attack.target_class >= classes:
            problems.append(
                f"{name}.attack.target_class: {attack.target_class} is no class of {source!r}, "
                f"which has {classes} (0 to {classes - 1})"
            )
        if train_images is not None and attack.count is not None and attack.count > train_images:
            problems.append(
                f"{name}.attack.count: {attack.count} poisoned samples asked, but {source!r} "
                f"has {train_images} training images"
            )
    if problems:
        raise ParameterError("; ".join(problems))
