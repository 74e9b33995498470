"""Manifests: where the images of a job are and what their labels are.

A SOURCE is a folder (local, or at an fsspec URL such as ``s3://bucket/photos/``) or a CSV / Parquet file
with a ``path`` column and optional ``label`` and ``split`` columns; relative paths resolve against its
folder (in object storage ``..`` resolves too). A Parquet table may instead hold the images themselves,
encoded, in an ``image`` column (bytes, or Hugging Face's ``{"bytes", "path"}`` struct).

Folders, as they really are:

- A folder with sub-folders that hold images is labelled: each top-level sub-folder is a class (images at
  any depth below it). Images directly in the top folder are extracted too, with no label (``compare``
  leaves them out; nothing is silently dropped). A folder without such sub-folders is flat: no labels.
- Every other entry is skipped and counted, with its reason, in ``frame.attrs["skipped"]`` (hidden
  names, unknown suffixes, folders that cannot be listed, symbolic links to folders, which are not followed
  so that a link loop cannot trap the walk).
- Symbolic links to files keep their own name (a broken one fails as ``missing`` under its own name), and
  names that are not valid UTF-8 are kept as Python sees them (their undecodable bytes are escaped only in
  output files). FIFOs and devices with an image suffix fail one by one (``not_a_file``), never hang.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

import pandas as pd

from featx.errors import ParameterError
from featx.feature_files import printable_path
from featx.inputs import shards, sources, tables, timeouts
from featx.inputs.sources import IMAGE_SUFFIXES

#: Columns featx writes into feature files: a manifest that already has them would be overwritten or unreadable.
RESERVED_COLUMNS = ("key", "features")
_TABLE_SUFFIXES = (".parquet", ".csv", ".tsv", ".txt")
_FEATURE_COLUMNS = 16  # this many numeric columns make a table of vectors, not a manifest


def load_manifest(source: str | os.PathLike) -> pd.DataFrame:
    """A DataFrame with an absolute ``path`` column and, where known, ``label`` and ``split``.

    Entries of a folder that are not images are counted in ``attrs["skipped"]``: a list of (path, reason).
    """
    text = os.fspath(source)
    if shards.is_shard_source(text):
        return shards.shard_manifest(shards.expand_shards(text))
    if sources.is_url(text):
        return _remote_manifest(text, _remote_folder(text))
    source = Path(source).expanduser()
    if source.is_dir():
        return _folder_manifest(source)
    if not source.is_file():
        if any(c in str(source) for c in "*?["):  # a quoted glob; shards' patterns were taken above
            raise ParameterError(
                f"{source}: a pattern of image files is not a SOURCE; pass their folder, or a CSV "
                "manifest with a 'path' column listing them"
            )
        missing = "does not exist" if not source.exists() else "is not a folder or a file"
        raise ParameterError(
            f"{source} {missing}; a SOURCE is a folder of images or a CSV / Parquet manifest"
        )
    return _with_paths(_read_table(str(source)), str(source.parent.resolve()), source)


def load_job_source(source: str | os.PathLike) -> pd.DataFrame | shards.Shards:
    """What the batch job reads: WebDataset shards as :class:`~featx.inputs.shards.Shards` (streamed by the job,
    never listed here), anything else as :func:`load_manifest`'s frame."""
    text = os.fspath(source)
    if shards.is_shard_source(text):
        return shards.Shards(shards.expand_shards(text))
    if sources.is_url(text):
        listed = _remote_folder(text)  # listed once: a prefix may hold millions of objects
        if listed is not None and _only_shards(listed):
            return shards.Shards(shards.expand_shards(text))
        return _remote_manifest(text, listed)
    return load_manifest(source)


def _with_paths(frame: pd.DataFrame, root: str, source: Any) -> pd.DataFrame:
    """Check the columns; make relative paths absolute against the manifest's folder (URLs stay as they are)."""
    looks_like = _features_table(frame, str(source))
    if looks_like:
        raise ParameterError(
            f"{source} is {looks_like}, not a manifest of images; featx compare takes a features file that "
            "`featx extract --out` wrote (.parquet, or .npy beside its .meta.csv) or images (a folder, or a "
            "manifest with a 'path' column); vectors of your own go to featx.evaluate.compare_classifiers(X, y)"
        )
    if "path" not in frame.columns:
        raise ParameterError(f"{source} has columns {list(frame.columns)}; a manifest needs a 'path' column")
    reserved = [c for c in RESERVED_COLUMNS if c in frame.columns]
    if reserved:
        raise ParameterError(
            f"{source} has a column named {reserved[0]!r}, which featx writes into feature files; "
            "rename it (e.g. to 'source_" + reserved[0] + "')"
        )
    if frame.empty:  # like a folder without images: a job that would extract nothing is a mistake
        raise ParameterError(f"{source} lists no images (it has no rows)")
    if not (pd.api.types.is_object_dtype(frame["path"]) or pd.api.types.is_string_dtype(frame["path"])):
        raise ParameterError(
            f"{source}: its 'path' column holds {frame['path'].dtype} values, not paths; write the paths "
            "(or URLs) as text"
        )
    blank = frame["path"].isna() | (frame["path"].astype(str).str.strip() == "")
    paths = frame["path"].astype(str)
    frame = frame.copy()
    # a blank cell stays blank, and fails as that row's error ("the path is blank"), not the whole job's
    frame["path"] = [
        "" if is_blank else p if sources.is_url(p) or os.path.isabs(p) else _joined(root, p)
        for p, is_blank in zip(paths, blank)
    ]
    frame = frame.reset_index(drop=True)
    frame.attrs["skipped"] = []
    return frame


def _features_table(frame: pd.DataFrame, source: str) -> str | None:
    """What a table of feature vectors given as a manifest looks like (None if it looks like a manifest):
    the row list of an ``.npy`` features file, featx's own columns saved again as CSV, or a row of numbers
    per image (a manifest's other columns are a few: sizes, scores, ids)."""
    matrix = source[: -len(".meta.csv")] + ".npy" if source.endswith(".meta.csv") else None
    if matrix and "key" in frame.columns and os.path.exists(matrix):
        return f"the row list of the features file {matrix} (pass that file)"
    if "features" in frame.columns and "key" in frame.columns:
        return "a features file saved again as a table (its 'key' and 'features' columns)"
    numeric = [c for c in frame.select_dtypes("number").columns if c not in ("label", "split")]
    if len(numeric) >= _FEATURE_COLUMNS:
        return f"a table of feature vectors ({len(numeric)} numeric columns of {len(frame.columns)})"
    return None


def _remote_manifest(url: str, listed: tuple[str, list[str]] | None) -> pd.DataFrame:
    """A manifest or table at ``url`` (``listed`` is None), or the folder ``listed`` there."""
    if listed is None:
        return _with_paths(_read_table(url), url.rsplit("/", 1)[0], url)
    if _only_shards(listed):
        return shards.shard_manifest(shards.expand_shards(url))
    return _listed_folder_manifest(url, *listed)


def _joined(root: str, relative: str) -> str:
    """A manifest's relative path against its folder; in object storage ``..`` and ``.`` are resolved
    here (a store has keys, not folders, and would look for a key holding ``..``)."""
    if not sources.is_url(root):
        return f"{root}/{relative}"
    protocol, _, rest = root.partition("://")
    return f"{protocol}://{posixpath.normpath(posixpath.join(rest, relative))}"


def _remote_folder(url: str) -> tuple[str, list[str]] | None:
    """(the folder's path as fsspec names it, every object below it, sorted) when ``url`` is a folder in
    object storage or on a server fsspec can list; None when it is a file (a manifest or table)."""
    import fsspec

    timeouts.ensure()
    if os.path.splitext(url)[1].lower() in _TABLE_SUFFIXES:
        return None
    filesystem, root = fsspec.core.url_to_fs(url)
    try:
        if not filesystem.isdir(root):
            return None
        return root.rstrip("/"), sorted(filesystem.find(root))
    except (OSError, ValueError) as error:
        raise ParameterError(f"{url}: cannot list this folder ({type(error).__name__}: {error})") from None


def _only_shards(listed: tuple[str, list[str]]) -> bool:
    names = listed[1]
    return any(n.endswith(sources.SHARD_SUFFIXES) for n in names) and not any(
        os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES for n in names
    )


def _listed_folder_manifest(url: str, root: str, objects: list[str]) -> pd.DataFrame:
    """A folder in object storage, by the rules of a local one: each top-level sub-folder is a class,
    images at the top are unlabelled, hidden names and other suffixes are skipped with their reason."""
    top: list[str] = []
    classes: dict[str, list[str]] = {}
    skipped: list[tuple[str, str]] = []
    for path, name in zip(sources.with_protocol(url, objects), objects):
        parts = name[len(root) :].lstrip("/").split("/")
        if any(part.startswith(".") for part in parts):
            skipped.append((path, "a hidden file" if parts[-1].startswith(".") else "in a hidden folder"))
        elif os.path.splitext(parts[-1])[1].lower() not in IMAGE_SUFFIXES:
            skipped.append((path, "not an image suffix"))
        elif len(parts) == 1:
            top.append(path)
        else:
            classes.setdefault(parts[0], []).append(path)
    return _labelled_frame(url, top, dict(sorted(classes.items())), skipped)


def _read_table(source: str) -> pd.DataFrame:
    """A CSV / TSV / Parquet manifest, local or at an fsspec URL (pandas reads those through fsspec)."""
    suffix = os.path.splitext(source)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        raise ParameterError(
            f"{source} is one image; a SOURCE is a folder of images or a manifest listing them (a CSV "
            "with a 'path' column); in Python, pass [path] as X"
        )
    if suffix in (".zip", ".7z", ".rar", ".bz2", ".xz", ".zst"):
        raise ParameterError(
            f"{source}: featx does not read {suffix} archives; unpack it to a folder, or pack the images "
            "as tar shards (.tar, .tar.gz)"
        )
    if suffix not in _TABLE_SUFFIXES:
        raise ParameterError(f"{source}: a manifest must be .csv, .tsv or .parquet (or pass a folder)")
    try:
        if suffix == ".parquet":
            return _read_parquet(source)
        return pd.read_csv(source, sep="\t" if suffix == ".tsv" else ",", dtype={"path": str})
    except UnicodeDecodeError as error:
        raise ParameterError(
            f"{source}: the manifest is not UTF-8 text (it holds the byte 0x{error.object[error.start]:02x}); "
            "save it as UTF-8, or write a Parquet manifest"
        ) from None
    except (ValueError, OSError, ImportError) as error:  # pandas' and pyarrow's parse errors are ValueErrors
        raise ParameterError(
            f"{source}: cannot read the manifest ({type(error).__name__}: {error})"
        ) from None


def _read_parquet(source: str) -> pd.DataFrame:
    """A Parquet manifest; in a table of encoded images (no ``path`` column, an ``image`` column of bytes)
    each row is named ``row://image/ROW::TABLE`` and the images themselves are not read here."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(source, "rb") as handle:
        file = pq.ParquetFile(handle)
        names = file.schema_arrow.names
        column = None if "path" in names else tables.image_column(file.schema_arrow, source)
        if column is None:
            return file.read().to_pandas()
        others = file.read(columns=[n for n in names if n != column]).to_pandas() if len(names) > 1 else None
        n_rows = file.metadata.num_rows
    table = source if sources.is_url(source) else os.path.abspath(source)
    frame = pd.DataFrame({"path": [tables.row_path(table, column, row) for row in range(n_rows)]})
    return frame if others is None else pd.concat([frame, others.reset_index(drop=True)], axis=1)


def is_features_file(path: str | os.PathLike) -> bool:
    """True for what ``featx extract --out`` writes (a ``.npy``, or a Parquet file with a features column)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return True
    if path.suffix.lower() != ".parquet" or not path.is_file():
        return False
    import pyarrow.parquet as pq

    from featx.feature_files import FEATURES_COLUMN

    try:
        return FEATURES_COLUMN in pq.read_schema(path).names
    except (OSError, ValueError):  # not Parquet at all: the manifest reader says so, in one line
        return False


def _folder_manifest(folder: Path) -> pd.DataFrame:
    return _labelled_frame(folder, *_walk(folder))


def _labelled_frame(
    folder: Any, top: list[str], classes: dict[str, list[str]], skipped: list[tuple[str, str]]
) -> pd.DataFrame:
    rows = [(path, None) for path in top] + [
        (path, label) for label, paths in classes.items() for path in paths
    ]
    # object columns: a name that is not UTF-8 (a surrogate escape) is no Arrow string
    frame = pd.DataFrame(rows, columns=["path", "label"], dtype=object)
    if not classes:
        frame = frame.drop(columns="label")
    if frame.empty:
        raise ParameterError(
            f"{folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            f"{len(skipped)} other entries were skipped"
        )
    frame.attrs["skipped"] = skipped
    return frame


def _walk(folder: Path) -> tuple[list[str], dict[str, list[str]], list[tuple[str, str]]]:
    """(images in the top folder, class -> its images, skipped entries with reasons), all sorted."""
    root = os.path.abspath(folder)
    top: list[str] = []
    classes: dict[str, list[str]] = {}
    skipped: list[tuple[str, str]] = []

    def unlistable(error: OSError) -> None:
        skipped.append((error.filename or root, f"cannot list this folder: {error.strerror}"))

    for here, dirs, files in os.walk(root, onerror=unlistable, followlinks=False):
        relative = os.path.relpath(here, root)
        for name in sorted(dirs):
            path = os.path.join(here, name)
            if os.path.islink(path):
                skipped.append((path, "a symbolic link to a folder (not followed)"))
            elif name.startswith("."):
                skipped.append((path, "a hidden folder (not searched)"))
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(here, d))
        )
        for name in sorted(files):
            path = os.path.join(here, name)
            if name.startswith("."):
                skipped.append((path, "a hidden file"))
            elif os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                skipped.append((path, "not an image suffix"))
            elif relative == ".":
                top.append(path)
            else:
                classes.setdefault(printable_path(relative.split(os.sep)[0]), []).append(path)
    return top, dict(sorted(classes.items())), skipped
