"""Manifest loading: validation errors name file, line and column; round trips; folder scans."""

from __future__ import annotations

import pytest

from mg_data import (
    ManifestError,
    ManifestRow,
    load_manifest,
    parse_manifest,
    probe_manifest,
    scan_folder,
    write_manifest,
)


def _write(tmp_path, text, name="m.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_loads_columns_metadata_and_extra(tmp_path):
    path = _write(
        tmp_path,
        "video,caption,num_frames,height,width,fps,color,latent\n"
        'a/x.mp4,"a red, round thing",16,64,48,8.0,red,\n'
        "b.png,,1,10,20,1,blue,custom/key.npz\n",
    )
    manifest = load_manifest(path)
    assert len(manifest) == 2 and manifest.root == tmp_path and manifest.path == path
    first, second = manifest.rows
    assert (first.video, first.caption, first.line) == ("a/x.mp4", "a red, round thing", 2)
    assert (first.num_frames, first.height, first.width, first.fps) == (16, 64, 48, 8.0)
    assert first.info.aspect_ratio == 64 / 48 and first.latent is None
    assert first.extra == {"color": "red"}
    assert second.is_image and second.latent == "custom/key.npz" and second.caption == ""
    assert manifest.abspath(0) == str(tmp_path / "a/x.mp4")
    assert manifest.has_metadata


def test_root_override_and_bom(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes("\ufeffvideo\nv.mp4\n".encode())
    manifest = load_manifest(path, root=tmp_path / "data")
    assert manifest.rows[0].video == "v.mp4" and manifest.root == tmp_path / "data"
    assert not manifest.has_metadata


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", r"m\.csv: empty manifest"),
        ("   \n", r"m\.csv: empty manifest"),
        ("caption\nhello\n", r"m\.csv, line 1: missing column 'video'"),
        ("video,caption\n", r"m\.csv: no rows"),
        ("video,caption\na.mp4,x\nb.mp4\n", r"m\.csv, line 3: expected 2 fields"),
        ("video,caption\na.mp4,x\n,y\n", r"m\.csv, line 3, column 'video': empty"),
        ("video,num_frames\na.mp4,many\n", r"m\.csv, line 2, column 'num_frames': expected int"),
        ("video,fps\na.mp4,-3\n", r"m\.csv, line 2, column 'fps': expected a non-negative"),
        ("video\n/abs/a.mp4\n", r"line 2, column 'video': '/abs/a.mp4' must be a path relative"),
        ("video\n../up.mp4\n", r"line 2, column 'video'.*relative"),
        ("video,video\na,b\n", r"line 1: duplicate columns \['video'\]"),
    ],
)
def test_malformed_manifests_name_file_line_and_column(tmp_path, text, pattern):
    with pytest.raises(ManifestError, match=pattern):
        load_manifest(_write(tmp_path, text))


def test_line_numbers_count_multiline_captions_and_blank_lines(tmp_path):
    text = 'video,caption\na.mp4,"two\nlines"\n\nb.mp4,ok\nc.mp4,x,extra\n'
    with pytest.raises(ManifestError, match=r"line 6: expected 2 fields"):
        load_manifest(_write(tmp_path, text))
    manifest = load_manifest(_write(tmp_path, text.rsplit("c.mp4", 1)[0]))
    assert [(r.video, r.line) for r in manifest.rows] == [("a.mp4", 2), ("b.mp4", 5)]
    assert manifest.rows[0].caption == "two\nlines"


def test_required_caption(tmp_path):
    path = _write(tmp_path, "video,caption\na.mp4,hi\nb.mp4,  \n")
    assert len(load_manifest(path)) == 2
    with pytest.raises(ManifestError, match=r"line 3, column 'caption': empty value"):
        load_manifest(path, require=("video", "caption"))
    with pytest.raises(ManifestError, match=r"missing column 'text_emb'"):
        load_manifest(path, require=("text_emb",))


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ManifestError, match=r"nope\.csv: manifest not found"):
        load_manifest(tmp_path / "nope.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"video\n\xff\xfe.mp4\n")
    with pytest.raises(ManifestError, match=r"latin1\.csv: cannot read"):
        load_manifest(bad)


def test_write_then_load_round_trip(tmp_path):
    rows = [
        ManifestRow(
            video="v/1.mp4",
            caption='say "hi", twice',
            num_frames=3,
            height=4,
            width=6,
            fps=2.5,
            extra={"k": "x"},
        ),
        ManifestRow(video="v/2.png", caption="", extra={"k": "y"}),
    ]
    path = write_manifest(tmp_path / "out" / "m.csv", rows)
    loaded = load_manifest(path)
    assert loaded.columns == ("video", "caption", "num_frames", "height", "width", "fps", "k")
    for original, back in zip(rows, loaded.rows, strict=True):
        assert (back.video, back.caption, back.num_frames, back.fps, back.extra) == (
            original.video,
            original.caption,
            original.num_frames,
            original.fps,
            original.extra,
        )
    assert [p.name for p in path.parent.iterdir()] == ["m.csv"]


def test_scan_folder_lists_media_recursively(tmp_path, index_frames):
    from mg_data import write_image, write_video

    write_video(tmp_path / "b" / "x.mp4", index_frames(3), fps=3)
    write_image(tmp_path / "a.png", index_frames(1)[0])
    (tmp_path / "notes.txt").write_text("ignored")
    manifest = scan_folder(tmp_path)
    assert [r.video for r in manifest.rows] == ["a.png", "b/x.mp4"]
    assert load_manifest(tmp_path).rows[1].video == "b/x.mp4"
    infos = probe_manifest(manifest)
    assert [(i.num_frames, i.is_image) for i in infos] == [(1, True), (3, False)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="empty: no video or image"):
        scan_folder(tmp_path / "empty")


def test_probe_manifest_prefers_columns_and_reports_unreadable(tmp_path, index_frames):
    from mg_data import MediaReadError, write_video

    write_video(tmp_path / "real.mp4", index_frames(5), fps=5)
    manifest = parse_manifest(
        "video,num_frames,height,width,fps\nreal.mp4,99,8,8,1\nreal.mp4,,,,\ngone.mp4,,,,\n", tmp_path
    )
    infos = probe_manifest(manifest)
    assert infos[0].num_frames == 99  # trusted from the columns, no file access
    assert infos[1].num_frames == 5 and (infos[1].height, infos[1].width) == (32, 32)
    assert isinstance(infos[2], MediaReadError) and "gone.mp4" in str(infos[2])
    assert probe_manifest(manifest, use_columns=False)[0].num_frames == 5
