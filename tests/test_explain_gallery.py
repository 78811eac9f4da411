"""The explainer's gallery view files (amlab.explain.gallery): the map's columns are the
pictures on the training set's principal axes (against scikit-learn's PCA), training.json
carries the training set's map and the nearest images, the shipped gallery is one the shipped
model draws, `amlab export` copies it byte for byte, the server answers data/gallery/ from a
user's gallery without leaving it, and bad input is refused."""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from typer.testing import CliRunner

from amlab.cli import app
from amlab.errors import AmlabError
from amlab.explain import STATIC_DIR, serve
from amlab.explain.diffusion_onnx import SHIPPED_TEXT_DENOISER
from amlab.explain.gallery import (
    MAP_COLUMNS,
    NEIGHBOURS,
    SHIPPED_GALLERY,
    VIEW_COLUMNS,
    copy_shipped_gallery,
    write_gallery_view,
)
from amlab.tasks.gallery import (
    GALLERY_SCHEMA,
    GallerySpec,
    gallery_pictures,
    generate,
    read_png,
    regenerate,
)
from amlab.tasks.gallery_query import check_schema
from amlab.tasks.prompts import SHIPPED_MODEL, load_text_model

runner = CliRunner()
SPEC = GallerySpec(("a thick 3", "a 0"), seeds=(1, 2), guidance=(1.0, 3.0), steps=(4,), part_size=3)


@pytest.fixture(scope="module")
def model():
    return load_text_model()


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, model):
    out = tmp_path_factory.mktemp("gallery")
    generate(SPEC, out, model)
    return out


@pytest.fixture(scope="module")
def view(tmp_path_factory, gallery):
    out = tmp_path_factory.mktemp("view") / "files"
    result = runner.invoke(
        app, ["gallery", "explorer", "--gallery", str(gallery), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def sklearn_map(train: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """x on the training set's two principal axes by scikit-learn, each axis signed as amlab
    signs it (its largest entry positive)."""
    pca = PCA(2, svd_solver="full").fit(train.double().numpy())
    signs = np.sign(pca.components_[np.arange(2), np.abs(pca.components_).argmax(1)])
    return pca.transform(x.double().numpy()) * signs


def test_view_files_are_the_gallery_and_its_map(gallery, view, model):
    source = pq.read_table(gallery / "metadata.parquet")
    table = pq.read_table(view / "metadata.parquet")
    assert table.column_names == [*GALLERY_SCHEMA.names, *MAP_COLUMNS]
    assert table.select(source.column_names).equals(source)
    pictures = gallery_pictures(gallery, source)
    coords = np.stack([table[c].to_numpy() for c in MAP_COLUMNS], 1)
    np.testing.assert_allclose(coords, sklearn_map(model.train.images, pictures), atol=1e-5)
    training = json.loads((view / "training.json").read_text())
    assert training["count"] == len(model.train.images)
    train_map = np.array(training["map"]).reshape(-1, 2)
    np.testing.assert_allclose(
        train_map, sklearn_map(model.train.images, model.train.images), atol=1e-4
    )
    # each picture's NEIGHBOURS nearest training images, against scikit-learn's brute force;
    # the first is the audit's nearest_train at its nearest_distance
    found = NearestNeighbors(n_neighbors=NEIGHBOURS, algorithm="brute")
    distance, index = found.fit(model.train.images.double().numpy()).kneighbors(pictures.numpy())
    for row, name in enumerate(source["image_name"].to_pylist()):
        shown = np.array(training["neighbours"][name])
        assert shown[:, 0].tolist() == index[row].tolist()
        np.testing.assert_allclose(shown[:, 1], distance[row], rtol=1e-9)
        assert shown[0, 0] == source["nearest_train"][row].as_py()
        assert shown[0, 1] == pytest.approx(source["nearest_distance"][row].as_py(), rel=1e-6)
    nearest = sorted(set(source["nearest_train"].to_pylist()) | set(index.reshape(-1).tolist()))
    assert sorted(map(int, training["pixels"])) == nearest
    for i in nearest:
        assert training["pixels"][str(i)] == model.train.images[i].double().tolist()
        assert training["labels"][str(i)] == int(model.train.labels[i])
    for part, name in zip(
        source["part_id"].to_pylist(), source["image_name"].to_pylist(), strict=True
    ):
        path = f"images/part-{part:06d}/{name}"
        assert (view / path).read_bytes() == (gallery / path).read_bytes()


def test_the_shipped_gallery_is_the_shipped_models(model):
    table = pq.read_table(SHIPPED_GALLERY / "metadata.parquet")
    check_schema(SHIPPED_GALLERY / "metadata.parquet")
    assert table.column_names == [*GALLERY_SCHEMA.names, *MAP_COLUMNS]
    assert 100 <= table.num_rows <= 300
    assert set(table["model_hash"].to_pylist()) == {model.hash}
    for column in ("cfg", "step", "seed"):  # something for each filter to choose
        assert len(set(table[column].to_pylist())) >= 2, column
    pictures = gallery_pictures(SHIPPED_GALLERY, table)
    coords = np.stack([table[c].to_numpy() for c in MAP_COLUMNS], 1)
    np.testing.assert_allclose(coords, sklearn_map(model.train.images, pictures), atol=1e-5)
    for row in (table.slice(0, 1).to_pylist()[0], table.slice(table.num_rows - 1).to_pylist()[0]):
        path = SHIPPED_GALLERY / f"images/part-{row['part_id']:06d}/{row['image_name']}"
        assert np.array_equal(regenerate(row, model), read_png(path))


def test_export_copies_the_shipped_gallery_byte_for_byte(tmp_path):
    (tmp_path / "gallery").mkdir()
    (tmp_path / "gallery" / "stale.txt").write_text("from an earlier export")
    out = copy_shipped_gallery(tmp_path / "gallery")
    files = sorted(
        p.relative_to(SHIPPED_GALLERY) for p in SHIPPED_GALLERY.rglob("*") if p.is_file()
    )
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files
    for name in files:
        assert (out / name).read_bytes() == (SHIPPED_GALLERY / name).read_bytes()


def test_the_built_app_carries_the_shipped_gallery():
    built = STATIC_DIR / "data" / "gallery"
    for name in ("metadata.parquet", "training.json"):
        assert (built / name).read_bytes() == (SHIPPED_GALLERY / name).read_bytes(), name


def test_bad_input_is_refused(tmp_path, gallery, model):
    table = pq.read_table(gallery / "metadata.parquet")
    pictures = gallery_pictures(gallery, table)
    train = model.train
    with pytest.raises(AmlabError, match=r"lacks the column\(s\) audit "):
        write_gallery_view(
            table.drop(["audit"]),
            pictures,
            train.images,
            train.labels,
            gallery / "images",
            tmp_path / "a",
        )
    with pytest.raises(AmlabError, match="pictures"):
        write_gallery_view(
            table, pictures[:2], train.images, train.labels, gallery / "images", tmp_path / "b"
        )
    with pytest.raises(AmlabError, match="outside the training set"):
        write_gallery_view(
            table, pictures, train.images[:1], train.labels[:1], gallery / "images", tmp_path / "c"
        )
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(AmlabError, match="not an empty directory"):
        write_gallery_view(
            table, pictures, train.images, train.labels, gallery / "images", tmp_path / "d"
        )


def test_cli_refuses_what_is_no_gallery(tmp_path, gallery):
    # a DiffusionDB-shaped table alone (no .amlab/: no model to map it with)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(gallery / "metadata.parquet", alone / "metadata.parquet")
    result = runner.invoke(
        app, ["gallery", "explorer", "--gallery", str(alone), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "holds no finished gallery" in result.output
    # a gallery whose parquet is broken
    broken = tmp_path / "broken"
    shutil.copytree(gallery, broken)
    (broken / "metadata.parquet").write_bytes(b"not a parquet file")
    result = runner.invoke(
        app, ["explain", "--gallery", str(broken), "--no-browser", "--port", "0"]
    )
    assert result.exit_code == 2 and "metadata.parquet is not readable" in result.output


def get(port: int, path: str) -> tuple[int, bytes]:
    """A raw GET of ``path`` (sent as it is: no client-side normalisation of '..')."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_server_answers_data_gallery_from_the_users_gallery_only(tmp_path, view):
    (tmp_path / "secret.txt").write_text("outside the gallery")
    served = tmp_path / "served"
    shutil.copytree(view, served)
    server = serve(0, background=True, gallery=served)
    port = server.server_address[1]
    try:
        status, body = get(port, "/data/gallery/metadata.parquet")
        assert status == 200 and body == (served / "metadata.parquet").read_bytes()
        status, body = get(port, "/data/gallery/training.json?x=1")
        assert status == 200 and body == (served / "training.json").read_bytes()
        for path in (
            "/data/gallery/../secret.txt",
            "/data/gallery/%2e%2e/secret.txt",
            "/data/gallery/..%2fsecret.txt",
            "/data/gallery//" + str(tmp_path / "secret.txt"),
        ):
            status, body = get(port, path)
            assert status == 404 and b"outside the gallery" not in body, path
        # the rest of the app is the built one
        status, body = get(port, "/data/manifest.json")
        assert status == 200 and body == (STATIC_DIR / "data" / "manifest.json").read_bytes()
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(AmlabError, match="no metadata.parquet"):
        serve(0, gallery=tmp_path)


def test_cli_explain_serves_a_users_gallery(gallery, tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where it writes the view's files
    proc = subprocess.Popen(
        [sys.executable, "-m", "amlab.cli", "explain", "--port", "0", "--no-browser"]
        + ["--gallery", str(gallery)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = []
        while not lines or "serving http://127.0.0.1:" not in lines[-1]:
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        url = lines[-1].split("serving ")[1].split()[0]
        assert url.endswith("/#/gallery")
        with urllib.request.urlopen(url.split("#")[0] + "data/gallery/metadata.parquet") as r:
            table = pq.read_table(pa.BufferReader(r.read()))
        assert table.num_rows == len(SPEC.rows()) and table.column_names[-2:] == list(MAP_COLUMNS)
        assert [p.name[:14] for p in tmp_path.iterdir()] == ["amlab-gallery-"]
        proc.send_signal(signal.SIGINT)  # Ctrl-C: it stops and removes the view's files
        assert proc.wait(timeout=10) == 0
        assert list(tmp_path.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def test_view_columns_are_a_gallerys():
    assert set(VIEW_COLUMNS) <= set(GALLERY_SCHEMA.names)


def test_the_explainer_exports_the_model_the_gallery_draws_with():
    """explain may not import tasks, so diffusion_onnx names the shipped text model's folder
    again: it must stay the one amlab gallery loads."""
    assert SHIPPED_TEXT_DENOISER.resolve() == SHIPPED_MODEL.resolve()
    assert (SHIPPED_TEXT_DENOISER / "captions.json").is_file()
