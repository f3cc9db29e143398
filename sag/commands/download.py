"""Download and extract a dataset (Market-1501, CUHK03); DukeMTMC-reID must be brought by hand.

The address comes from --url, else $SAG_<NAME>_URL, else the built-in one; --sha256 (or $SAG_<NAME>_SHA256)
verifies the archive. An interrupted download resumes when run again.
"""

from __future__ import annotations

import argparse

from sag.data.downloader import download


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``download``."""
    parser.add_argument("name", choices=("market1501", "cuhk03", "dukemtmc"), help="dataset to fetch")
    parser.add_argument("--root", required=True, help="folder to download and extract into")
    parser.add_argument("--url", default=None, help="archive address (overrides $SAG_<NAME>_URL)")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    parser.add_argument("--retries", type=_count, default=3, help="resume attempts after a broken transfer (0 or more)")


def _count(text: str) -> int:
    """A whole number >= 0 for argparse."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number 0 or more, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Fetch, verify and extract; print where the dataset is."""
    folder = download(args.name, args.root, url=args.url, sha256=args.sha256, retries=args.retries)
    print(f"{args.name} ready at {folder}")
    print(f"load it with sag.data.load_dataset({args.name!r}, {str(folder)!r})")
    return 0
