"""``cxr-augment-grid``: a picture of an augmentation set on real (or synthetic) training samples.

    cxr-augment-grid augment=heavy_customrot datamodule=rsna datamodule.data_dir=DIR out=grid.png

Each row is one training sample: first as the model sees it without augmentation, then ``cols``
random draws of the set, with boxes drawn in red (like Fig. 5 of Gabruseva et al.). Every other
``key=value`` is a ``cxr-train`` override. Options: ``out=`` (PNG path), ``rows=``, ``cols=``, ``seed=``.
"""

from __future__ import annotations

import sys

from cxr.reporting.augment_grid import render_grid

OPTIONS = {"out": "augment_grid.png", "rows": "4", "cols": "5"}


def _split_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    options, overrides = dict(OPTIONS), []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in options and value:
            options[key] = value
        else:
            overrides.append(arg)
    return options, overrides


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        raise SystemExit(0)
    options, overrides = _split_args(argv)
    from hydra.utils import instantiate

    from cxr.config.compose import build_augment, compose

    cfg = compose(overrides)
    datamodule = instantiate(cfg.datamodule, augment=build_augment(cfg.augment), _convert_="all")
    datamodule.setup("fit")
    dataset = datamodule.train_dataloader().dataset
    name = cfg.hydra.runtime.choices.get("augment", "?")
    out = render_grid(
        dataset,
        options["out"],
        int(options["rows"]),
        int(options["cols"]),
        seed=int(cfg.seed),
        title=f"augment={name}",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
