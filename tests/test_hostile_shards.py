"""Hostile tar shards: cut anywhere, a sample is kept or the cut is reported, never lost in silence."""

import io
import tarfile

import pytest
from conftest import encode, photo

from featx.errors import ShardReadError
from featx.inputs.sources import stream_samples

N_SAMPLES = 5


def write_tar(path, tar_format) -> tuple[bytes, list[int]]:
    """A shard of N_SAMPLES (png + cls) samples, and the byte offset where each sample's last member ends."""
    with tarfile.open(path, "w", format=tar_format) as tar:
        for number in range(N_SAMPLES):
            for extension, data in (("png", encode(photo(number, size=(8, 8)))), ("cls", b"1")):
                info = tarfile.TarInfo(f"{number:03d}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        ends = [m.offset_data + m.size for m in tar.getmembers()][1::2]
    return path.read_bytes(), ends


def read_until_failure(path) -> tuple[list[str], ShardReadError | None]:
    keys = []
    try:
        for sample in stream_samples(str(path)):
            keys.append(sample.key)
    except ShardReadError as error:
        return keys, error
    return keys, None


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_a_shard_cut_anywhere_keeps_every_whole_sample_or_reports_the_cut(tmp_path, tar_format):
    data, ends = write_tar(tmp_path / "whole.tar", tar_format)
    archive_end = ends[-1] + (-ends[-1] % 512)  # where the end-of-archive blocks start
    cuts = sorted(set(range(512, archive_end + 1, 512)) | set(range(100, archive_end, 211)))
    for cut in cuts:
        path = tmp_path / "cut.tar"
        path.write_bytes(data[:cut])
        keys, error = read_until_failure(path)
        assert keys == [f"{n:03d}" for n in range(len(keys))], cut
        if error is None:
            assert len(keys) == N_SAMPLES, f"cut at byte {cut}: {len(keys)} samples and no error"
        else:
            whole = sum(end <= cut for end in ends)
            assert len(keys) >= whole, f"cut at byte {cut}: {whole} whole samples, {len(keys)} kept ({error})"


def test_a_whole_shard_reads_every_sample_and_no_error(tmp_path):
    _, _ = write_tar(tmp_path / "whole.tar", tarfile.PAX_FORMAT)
    keys, error = read_until_failure(tmp_path / "whole.tar")
    assert error is None and len(keys) == N_SAMPLES
