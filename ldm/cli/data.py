"""ldm-data: look at training data before training on it. `dedupe` finds exact and near
duplicate images and writes a report and a `data.exclude` list."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ldm.bundled_configs import resolve_config_path
from ldm.cli.common import OneLineArgumentParser, UsageError, check_output_dir, fail
from ldm.config import ConfigError, apply_overrides, read_yaml
from ldm.errors import LdmError

PROG = "ldm-data"
DEFAULT_THRESHOLD = 18  # ldm.data.dedupe.DEFAULT_THRESHOLD (not imported: --help stays instant)
CONFIG_SUFFIXES = (".yaml", ".yml")

DEDUPE_HELP = """Finds exact duplicates (the same file bytes) and near duplicates (the same picture resized,
recompressed, brightened or cropped by a few percent) among the images of a folder or of a
training config's data (imagefolder, hf or webdataset: every sample, the validation ones too).
Near: the summed Hamming distance of two 64-bit perceptual hashes (phash + dhash) is at most
--threshold of 128 bits. Measured on 9,708 real photos with planted copies (docs/data.md), at
18: every resized, recompressed, brightened and 2%-cropped copy is found, 81% of 5%-cropped and
11% of 10%-cropped ones; 3 false pairs among the 47 million pairs of distinct photos.

Of each group of copies one is kept: the most pixels, then the largest file (the least
compressed), then the first in source order. Writes OUT/report.json (the groups: kept image,
the others with kind exact|near and hash distance, mirrored) and OUT/exclude.txt (the others'
sample keys, one per line: paths relative to the folder, hf row numbers, webdataset __key__s),
which training skips with data.exclude=OUT/exclude.txt."""

EXAMPLES = """examples:
  ldm-data dedupe my_pictures/
  ldm-data dedupe my_config.yaml --out runs/dedupe
  ldm-data dedupe cpu/text2img.yaml data.path=my_pictures/ --flips
  ldm-train --config cpu/text2img.yaml data.path=my_pictures/ data.exclude=dedupe/exclude.txt"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Look at training data before training on it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    dedupe = commands.add_parser(
        "dedupe",
        help="find exact and near duplicate images; write a report and a data.exclude list",
        description=DEDUPE_HELP,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dedupe.add_argument("data", metavar="DIR|CONFIG", help="a folder of images, or a training config (YAML file or bundled name)")
    dedupe.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the config, e.g. data.path=photos/")
    dedupe.add_argument("--out", default="dedupe", metavar="DIR", help="where report.json and exclude.txt go (default: dedupe)")
    dedupe.add_argument(
        "--threshold", type=int, default=DEFAULT_THRESHOLD, metavar="BITS",
        help=f"largest summed hash distance (0-128) of a near duplicate (default: {DEFAULT_THRESHOLD}; 0: exact and "
        "nearly pixel-identical copies only; 22 finds more cropped copies, and pairs 3x more distinct photos)",
    )  # fmt: skip
    dedupe.add_argument("--flips", action="store_true", help="a mirror image counts as a copy (for data trained with data.random_flip)")
    dedupe.add_argument("--workers", type=int, default=1, metavar="N", help="processes that decode and hash (default: 1)")
    dedupe.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def data_source(args):
    """What `dedupe` reads: ('folder', path) or ('config', DataConfig), after the cheap checks."""
    target = Path(args.data)
    if target.is_dir():
        if args.overrides:
            raise UsageError(f"{args.data} is a folder: key=value overrides apply to a training config only")
        return "folder", args.data
    if target.exists() and target.suffix.lower() not in CONFIG_SUFFIXES:
        raise UsageError(f"{args.data} is neither a folder of images nor a training config (.yaml)")
    if not target.exists() and target.suffix.lower() not in CONFIG_SUFFIXES:
        try:
            resolve_config_path(args.data)  # a bundled config's name
        except ConfigError:
            raise UsageError(f"{args.data} does not exist (give a folder of images or a training config)") from None
    try:
        path = resolve_config_path(args.data)
        apply_overrides(read_yaml(path), list(args.overrides))  # a bad YAML or override: told before torch loads
        from ldm.training.config import load_train_config

        return "config", load_train_config(path, args.overrides).data
    except ConfigError as error:
        raise UsageError(str(error).splitlines()[0]) from None


def check_dedupe_args(args) -> None:
    if not 0 <= args.threshold <= 128:
        raise UsageError(f"--threshold is {args.threshold}; it must be 0-128 (bits of the two 64-bit hashes)")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")


def dedupe(args) -> str:
    """Runs `ldm-data dedupe`; returns its closing line."""
    check_dedupe_args(args)
    kind, source = data_source(args)
    out = Path(args.out)
    check_output_dir(out)
    return find_and_write(kind, source, out, args.threshold, args.flips, args.workers, args.progress)


def find_and_write(kind: str, source, out: Path, threshold: int, flips: bool, workers: int, progress: bool) -> str:
    """Hashes every image (a progress bar on stderr), groups the copies, writes the report and
    the exclusion list (each crash-safely: the old file or the new one)."""
    import multiprocessing

    from tqdm.auto import tqdm

    from ldm.data.dedupe import dedupe_report, excluded_keys, fingerprints, group_duplicates
    from ldm.data.errors import DataError
    from ldm.data.exclude import write_exclusion_list
    from ldm.data.listing import list_folder, list_samples
    from ldm.files import write_file_atomic

    listing = list_folder(source, "the folder") if kind == "folder" else list_samples(source)
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    bar = tqdm(total=listing.count, desc="hashing", unit="image", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        prints = []
        for found in fingerprints(listing.samples, flips, pool):
            prints.append(found)
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    readable = [p for p in prints if not p.skipped]
    if not readable:
        raise DataError(f"no readable image among the {len(prints)} of {listing.description}")
    groups = group_duplicates(readable, threshold, flips)
    report = dedupe_report(listing.description, prints, groups, threshold, flips)
    excluded = excluded_keys(groups, readable)
    write_file_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    write_exclusion_list(out / "exclude.txt", excluded)
    skipped = f", {len(prints) - len(readable)} unreadable (named in the report)" if len(readable) < len(prints) else ""
    return (
        f"{PROG}: {len(prints)} images{skipped}: {report['groups']} group{'s' if report['groups'] != 1 else ''} of copies, "
        f"{len(excluded)} to exclude "
        f"({report['exact']} exact, {report['near']} near); wrote {out / 'report.json'} and {out / 'exclude.txt'} "
        f"(train without them: data.exclude={out / 'exclude.txt'})"
    )


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("choose a command: dedupe (ldm-data dedupe --help)")
    try:
        line = dedupe(args)
    except UsageError as error:
        fail(PROG, str(error))
    except LdmError as error:  # the data layer's DataError: a missing path, no images, a bad list
        fail(PROG, str(error).splitlines()[0] if str(error) else type(error).__name__)
    except ImportError as error:
        fail(PROG, f"missing module: {error}")
    except KeyboardInterrupt:
        fail(PROG, "interrupted; nothing was written", status=130)
    print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
