"""`stl train DIR` and `stl train photos.zip`: a folder with one subfolder of images per label
becomes the CSV a person would write next to it, so both name the same model.

Bad input (an empty folder, one label, a zip entry with ``..``, a zip bomb, a symlink out of
the folder) is one line and leaves nothing in the store.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from stl_testing import FAST, run_stl, sha1_of, small_dataset

from model.data.photo_csv import list_photos
from model.data.photo_trees import FolderTree, StoredTree, ZipTree
from model.errors import CsvError, DataError
from store import LocalStore

#: small_dataset's 12 images (4 per label), as the CSV it writes and the folder becomes.
CSV_SHA1 = "c03191454c159bbbf15ae039ffae965279fd1a49"
#: The model both train to (FAST recipe, seed 1234).
MODEL_SHA1 = "c3869ed6c43db73244a8ba6e943b32d9650fd6d2"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Four images per label, and what a real folder also holds: a CSV beside the label folders,
    a note inside one, a dot file."""
    root = tmp_path / "photos"
    small_dataset(root)  # writes photos/train.csv: the CSV a person would write for this folder
    (root / "dots" / "notes.txt").write_text("taken on a Tuesday\n")
    (root / "checks" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def _zip(root: Path, top: str | None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                rel = path.relative_to(root).as_posix()
                z.write(path, f"{top}/{rel}" if top else rel)
    return out.getvalue()


def test_a_folder_trains_the_model_its_csv_names(tmp_path: Path, photos: Path) -> None:
    by_folder = run_stl(["train", str(photos), *FAST], tmp_path / "a")
    assert by_folder.code == 0, by_folder.err
    assert (
        f"stl: {photos}: 12 images in 3 labels (checks, dots, stripes); skipped 1 hidden, "
        f"1 not an image, 1 not in a label folder; stored as CSV {CSV_SHA1}"
    ) in by_folder.err
    out = by_folder.json
    assert out["photos"] == {
        "csv_sha1": CSV_SHA1,
        "images": 12,
        "labels": ["checks", "dots", "stripes"],
        "skipped": {"hidden": 1, "not an image": 1, "not in a label folder": 1},
    }
    assert (out["status"], out["csv_sha1"], out["model_sha1"]) == ("ready", CSV_SHA1, MODEL_SHA1)
    # The generated CSV is the hand-written one, byte for byte, and stored under its sha1.
    assert sha1_of((photos / "train.csv").read_bytes()) == CSV_SHA1
    assert LocalStore(tmp_path / "a").get(CSV_SHA1) == (photos / "train.csv").read_bytes()
    by_csv = run_stl(["train", str(photos / "train.csv"), *FAST], tmp_path / "b")
    assert by_csv.json["model_sha1"] == MODEL_SHA1, by_csv.err


@pytest.mark.parametrize("top", [None, "photos"], ids=["flat", "zipped-folder"])
def test_a_zip_of_the_folder_trains_the_same_model(tmp_path: Path, photos: Path, top: str | None) -> None:
    archive = tmp_path / "photos.zip"
    archive.write_bytes(_zip(photos, top))
    run = run_stl(["train", str(archive), *FAST], tmp_path / "data")
    assert run.code == 0, run.err
    assert (run.json["csv_sha1"], run.json["model_sha1"]) == (CSV_SHA1, MODEL_SHA1)


def _refused(tmp_path: Path, source: Path, env: dict[str, str] | None = None) -> str:
    """The one error line of `stl train source`, after checking nothing was stored or recorded."""
    data = tmp_path / "refused-store"
    run = run_stl(["train", str(source), *FAST], data, env=env)
    assert run.code == 1, (run.out, run.err)
    assert "Traceback" not in run.err and run.out == ""
    assert not data.exists() or LocalStore(data).list_objects() == []
    return run.error_line


def test_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("nothing yet")
    assert _refused(tmp_path, tmp_path / "empty") == (
        f"stl: error: {tmp_path / 'empty'} has no images in label folders "
        "(expected <label>/<image> inside it); skipped 1 not in a label folder"
    )


def test_one_label_only(tmp_path: Path, photos: Path) -> None:
    for label in ("dots", "stripes"):
        for f in (photos / label).iterdir():
            f.unlink()
    assert _refused(tmp_path, photos) == (
        f"stl: error: {photos} has one label folder (checks): a classifier needs at least two; "
        "skipped 1 hidden, 1 not in a label folder"
    )


def test_a_symlink_out_of_the_folder(tmp_path: Path, photos: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes((photos / "dots" / "000.png").read_bytes())
    os.symlink(secret, photos / "dots" / "100.png")
    assert _refused(tmp_path, photos) == (
        f"stl: error: {photos}: dots/100.png is a symlink out of the folder (to {secret})"
    )
    # A link that stays inside is read as the file it names.
    (photos / "dots" / "100.png").unlink()
    os.symlink(photos / "dots" / "000.png", photos / "dots" / "100.png")
    tree = FolderTree(photos, 10**6)
    assert ("dots/100.png", "dots") in list_photos(tree, 100, 1000).rows


def test_a_zip_entry_that_climbs_out(tmp_path: Path, photos: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.write(photos / "dots" / "000.png", "dots/000.png")
        z.write(photos / "checks" / "000.png", "../x.png")
    (tmp_path / "climb.zip").write_bytes(out.getvalue())
    assert _refused(tmp_path, tmp_path / "climb.zip") == (
        f"stl: error: {tmp_path / 'climb.zip'}: entry '../x.png' points outside the archive's folder"
    )


def test_a_zip_bomb(tmp_path: Path, photos: Path) -> None:
    """A 10 MiB entry of zeros packs into 10 KiB: refused by its stated size, before inflating."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(photos / "dots" / "000.png", "dots/000.png")
        z.writestr("checks/000.png", b"\x89PNG\r\n\x1a\n" + bytes(10 * 2**20))
    assert len(out.getvalue()) < 64 * 1024
    (tmp_path / "bomb.zip").write_bytes(out.getvalue())
    assert _refused(tmp_path, tmp_path / "bomb.zip", env={"MAX_UNZIPPED_BYTES": str(2**20)}) == (
        f"stl: error: {tmp_path / 'bomb.zip'} unpacks to more than {2**20} bytes (MAX_UNZIPPED_BYTES)"
    )
    assert _refused(tmp_path, tmp_path / "bomb.zip", env={"MAX_DOWNLOAD_BYTES": str(2**20)}) == (
        f"stl: error: {tmp_path / 'bomb.zip'}: entry 'checks/000.png' is larger than {2**20} bytes "
        "(MAX_DOWNLOAD_BYTES)"
    )


def test_a_zip_that_lies_about_its_sizes_is_not_inflated_past_them(photos: Path) -> None:
    """Header sizes are what the limits check: an entry that inflates past its header is corrupt."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("dots/a.png", b"\x89PNG\r\n\x1a\n" + bytes(100_000))
        z.write(photos / "checks" / "000.png", "checks/000.png")
    data = bytearray(out.getvalue())
    # Rewrite the central directory's uncompressed size of dots/a.png (its first entry) to 1,000.
    at = data.find(b"PK\x01\x02")
    data[at + 24 : at + 28] = (1000).to_bytes(4, "little")
    tree = ZipTree(bytes(data), "liar.zip", 10**6, 10**6, 1000)
    with pytest.raises(DataError, match=r"^liar.zip: entry 'dots/a.png' is corrupt: Bad CRC-32"):
        tree.read("dots/a.png")


def test_a_file_that_only_starts_like_a_zip(tmp_path: Path) -> None:
    (tmp_path / "fake.zip").write_bytes(b"PK\x03\x04 and then nothing")
    line = _refused(tmp_path, tmp_path / "fake.zip")
    assert line.startswith(f"stl: error: {tmp_path / 'fake.zip'} is not a readable zip archive: ")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "AVIF"])
def test_every_photo_format_the_decoder_reads_is_listed(fmt: str) -> None:
    from PIL import Image

    from model.data.photo_csv import looks_like_image

    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, fmt)
    assert looks_like_image(out.getvalue()[:16])
    assert not looks_like_image(b"path,label,sha1\n")


def test_a_zip_with_one_entry_twice(tmp_path: Path, photos: Path) -> None:
    """Issue 44, defect 9: two entries of one name with other bytes; the last silently won."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for label in ("dots", "checks"):
            z.write(photos / label / "000.png", f"{label}/000.png")
            z.write(photos / label / "001.png", f"{label}/001.png")
        z.writestr("dots/000.png", (photos / "dots" / "002.png").read_bytes())
    (tmp_path / "twice.zip").write_bytes(out.getvalue())
    assert _refused(tmp_path, tmp_path / "twice.zip") == (
        f"stl: error: {tmp_path / 'twice.zip'}: entry 'dots/000.png' appears twice"
    )


@pytest.mark.parametrize(
    "name, said",
    [
        ("dots/a\x1b[31mred.png", "'dots/a\\x1b[31mred.png' has a control character"),
        ("dots\r\n/000.png", "'dots\\r\\n/000.png' has a control character"),
        ("dots /000.png", "label folder 'dots ' has white space at its start or end ('dots /000.png')"),
        ("   /000.png", "label folder '   ' has white space at its start or end ('   /000.png')"),
    ],
)
def test_control_characters_and_white_space_in_labels_are_refused_before_anything_is_stored(
    tmp_path: Path, photos: Path, name: str, said: str
) -> None:
    """Issue 44, defects 10 and 11: an ESC reached the terminal raw, a NUL label wrote a CSV that
    Python 3.10 cannot read, and ``dots `` joined ``dots`` while the stored CSV said ``dots ``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for label in ("dots", "checks"):
            z.write(photos / label / "001.png", f"{label}/001.png")
            z.write(photos / label / "002.png", f"{label}/002.png")
        z.write(photos / "stripes" / "000.png", name)
    (tmp_path / "names.zip").write_bytes(out.getvalue())
    assert _refused(tmp_path, tmp_path / "names.zip") == f"stl: error: {tmp_path / 'names.zip'}: {said}"


def test_a_csv_label_with_a_control_character_is_refused() -> None:
    from model.data.csvfile import parse_csv

    sha1 = "ab" * 20
    with pytest.raises(CsvError, match=r"CSV line 2: label 'b\\x07ell' has a control character"):
        parse_csv(f"a.png,cats,{sha1}\nb.png,b\x07ell,{sha1}\n".encode(), 100)


def test_an_uploaded_folder_with_a_path_twice_or_a_nul_is_refused(tmp_path: Path, photos: Path) -> None:
    """Issue 44, defects 9 and 10, the page's folder upload (paths and sha1s in a JSON body)."""
    store = LocalStore(tmp_path / "store")
    a, b = (store.put((photos / "dots" / f"00{i}.png").read_bytes()) for i in (0, 1))
    c = store.put((photos / "checks" / "000.png").read_bytes())
    files = [("dots/0.png", a), ("checks/0.png", c), ("dots/0.png", b)]
    with pytest.raises(DataError, match=r"^the folder: 'dots/0\.png' is listed twice$"):
        StoredTree(store, files, "the folder")
    tree = StoredTree(store, [("dots/0.png", a), ("dots/1.png", b), ("che\x00cks/0.png", c)], "the folder")
    with pytest.raises(DataError, match=r"^the folder: 'che\\x00cks/0.png' has a control character$"):
        list_photos(tree, 100, 1000)


def test_a_zip_that_would_fill_the_disk_is_refused_by_its_stated_sizes(tmp_path: Path, photos: Path) -> None:
    """Issue 44, defect 3: MIN_FREE_BYTES was checked after the unpack; a 0.5 MB zip of ten 50 MB
    entries took a 400 MB store to 45 MB free. Its stated sizes are weighed first now."""
    from model.data.photo_csv import store_photos
    from store.errors import StoreUnwritable

    archive = _zip(photos, None)
    tree = ZipTree(archive, "photos.zip", 10**6, 10**9, 1000)
    need = sum(tree.new_bytes(path) for path, _ in list_photos(tree, 100, 1000).rows)
    assert need == sum(f.stat().st_size for f in photos.glob("*/*.png"))
    store = LocalStore(tmp_path / "store")
    store.free_bytes = lambda: need + 999  # type: ignore[method-assign]
    with pytest.raises(StoreUnwritable) as refused:
        store_photos(store, tree, 100, min_free_bytes=1000, max_entries=1000)
    assert str(refused.value) == (
        f"photos.zip holds {need:,} bytes of photos; the store's disk has {need + 999:,} bytes free "
        "and keeps MIN_FREE_BYTES (1,000) free"
    )
    assert store.list_objects() == []
    assert store_photos(store, tree, 100, min_free_bytes=999, max_entries=1000).csv_sha1 == CSV_SHA1
    # Photos already in the store (a folder upload) add nothing, so nothing is weighed.
    stored = StoredTree(
        store, [(p, store.put(tree.read(p))) for p, _ in list_photos(tree, 100, 1000).rows], "the folder"
    )
    store.free_bytes = lambda: 0  # type: ignore[method-assign]
    assert store_photos(store, stored, 100, min_free_bytes=1000, max_entries=1000).csv_sha1 == CSV_SHA1


def test_an_uploaded_folder_reads_no_photo_whole_and_every_file_counts(tmp_path: Path, photos: Path) -> None:
    """Issue 44, defect 1: 1,000 folder entries naming one stored 50 MB object that starts like a
    PNG read and hashed it about four times each (177 s). Nothing is read whole now: an entry is
    judged by its first bytes, the CSV names the sha1s it was given, and training verifies each
    image once. Entries that are not images count towards MAX_FOLDER_ENTRIES."""
    from model.data.photo_csv import store_photos

    store = LocalStore(tmp_path / "store")
    big = store.put(b"\x89PNG\r\n\x1a\n" + bytes(8 * 2**20))
    small = [store.put((photos / "dots" / f"00{i}.png").read_bytes()) for i in (0, 1)]
    read: list[int] = []
    for name in ("get", "peek", "open", "iter_chunks", "get_to_file"):
        method = getattr(store, name)

        def counted(sha1: str, *args: object, _method=method, _name=name) -> object:
            read.append(store.stat_object(sha1)[1] if _name != "peek" else int(args[0]))  # type: ignore[index]
            return _method(sha1, *args)

        setattr(store, name, counted)
    files = [(f"a/{n}.png", big) for n in range(40)] + [("b/0.png", small[0]), ("b/1.png", small[1])]
    made = store_photos(store, StoredTree(store, files, "the folder"), 100, max_entries=1000)
    assert made.listing.rows[0] == ("a/0.png", "a") and len(made.listing.rows) == 42
    assert max(read) <= 16 and sum(read) <= 16 * 3, read  # each distinct object's first bytes, once
    rows = store.get(made.csv_sha1).decode().splitlines()
    assert rows[0] == f"a/0.png,a,{big}" and rows[-1] == f"b/1.png,b,{small[1]}"

    notes = store.put(b"taken on a Tuesday\n")
    many = [(f"a/{n}.txt", notes) for n in range(60)] + files[-2:] + [("c/0.png", small[0])]
    with pytest.raises(DataError, match=r"^the folder has more than 50 files \(MAX_FOLDER_ENTRIES\)$"):
        list_photos(StoredTree(store, many, "the folder"), 100, 50)
    assert len(list_photos(StoredTree(store, many, "the folder"), 100, 63).rows) == 3


def _entries_zip(n: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            z.writestr(f"notes/{i}.txt", b"")
    return out.getvalue()


def test_a_zip_of_too_many_entries_is_refused_by_the_count_it_states(tmp_path: Path) -> None:
    """Issue 44, defect 2's limit on entries: 500,000 entries of a 46 MB zip took a worker to
    1.6 GB. The count its end record states is weighed before the central directory is parsed;
    a zip64 record's count too; a directory that holds more than it states, after."""
    from model.data.photo_trees import stated_entries

    archive = _entries_zip(300)
    assert stated_entries(io.BytesIO(archive)) == 300
    with pytest.raises(
        DataError, match=r"^z\.zip has 300 entries, over the limit of 299 \(MAX_FOLDER_ENTRIES\)$"
    ):
        ZipTree(archive, "z.zip", 10**6, 10**9, 299)
    assert len(list(ZipTree(archive, "z.zip", 10**6, 10**9, 300).files())) == 300

    # A liar: the end record says 3 entries.
    at = archive.rfind(b"PK\x05\x06")
    liar = archive[: at + 8] + (3).to_bytes(2, "little") * 2 + archive[at + 12 :]
    assert stated_entries(io.BytesIO(liar)) == 3
    with pytest.raises(DataError, match=r"^z\.zip has 300 entries, over the limit of 299"):
        ZipTree(liar, "z.zip", 10**6, 10**9, 299)

    # Zip64: Python writes its end records once the count passes 65,535.
    big = _entries_zip(65_536)
    assert b"PK\x06\x06" in big[-200:] and stated_entries(io.BytesIO(big)) == 65_536
    with pytest.raises(DataError, match=r"^z\.zip has 65,536 entries, over the limit of 65,535"):
        ZipTree(big, "z.zip", 10**6, 10**9, 65_535)
    assert stated_entries(io.BytesIO(b"not a zip")) is None
    path = tmp_path / "z.zip"
    path.write_bytes(archive)
    assert _refused(tmp_path, path, env={"MAX_FOLDER_ENTRIES": "10"}) == (
        f"stl: error: {path} has 300 entries, over the limit of 10 (MAX_FOLDER_ENTRIES)"
    )
