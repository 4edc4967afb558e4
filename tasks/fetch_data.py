"""Fill data/ with the 12 CS224N minBERT files: copied from a local folder, else downloaded.

    python -m tasks.fetch_data [--data_dir data] [--source ../shared/data] [--force]

A file already in data_dir is kept unless --force. Each file is copied from --source when it is there,
otherwise downloaded from the public CS224N default-project repository. Files land under a temporary
name and are renamed when complete, so an interrupted run never leaves half a file that looks finished.
Exits non-zero, naming them, when some files could not be obtained.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from tasks.domain.data import ALL_FILES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO / "data"
DEFAULT_SOURCE = REPO.parent / "shared" / "data"
URL = "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data/{name}"


def download(url: str, dest: Path, timeout: float = 60) -> None:
    """Fetch `url` into `dest`; raises OSError (urllib's URLError/HTTPError are OSErrors) on failure."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f)


def _check_header(path: Path) -> None:
    """A data file's header names an `id` column; anything else (an HTML error page, say) is rejected."""
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    if "id" not in header:
        raise OSError(f"downloaded file does not look like a CS224N data file (header {header[:5]})")


def fetch(data_dir: Path = DEFAULT_DATA_DIR, source: Optional[Path] = DEFAULT_SOURCE, force: bool = False,
          files: Sequence[str] = ALL_FILES, downloader: Optional[Callable[[str, Path], None]] = None,
          log: Callable[[str], None] = print) -> List[str]:
    """Obtain `files` into `data_dir`; returns the names that could not be obtained.

    `downloader(url, dest)` defaults to `download`, looked up at call time so tests can replace it.
    """
    downloader = downloader or download
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    missing = []
    for name in files:
        dest, tmp = data_dir / name, data_dir / f".{name}.part"
        if dest.is_file() and not force:
            log(f"kept       {dest} (already present; --force to replace)")
            continue
        src = Path(source) / name if source is not None else None
        try:
            if src is not None and src.is_file():
                shutil.copyfile(src, tmp)
                how = f"copied     {src}"
            else:
                url = URL.format(name=name)
                downloader(url, tmp)
                _check_header(tmp)
                how = f"downloaded {url}"
            os.replace(tmp, dest)
            log(f"{how} -> {dest}")
        except (OSError, HTTPException) as err:  # URLError, HTTPError, timeouts, short reads
            tmp.unlink(missing_ok=True)
            missing.append(name)
            log(f"FAILED     {name}: {type(err).__name__}: {err}")
    return missing


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="where the files go (default: %(default)s)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="local folder to copy from before downloading (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace files already in data_dir")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"source folder {args.source} does not exist; downloading from {URL.format(name='')}")
    missing = fetch(args.data_dir, args.source, args.force)
    if missing:
        print(f"error: could not obtain {len(missing)} of {len(ALL_FILES)} files: {', '.join(missing)}. "
              f"Check your network, or copy them into {args.data_dir} by hand (e.g. from the CS224N "
              "default-project repository) and run again.", file=sys.stderr)
        return 1
    print(f"all {len(ALL_FILES)} data files are in {args.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
