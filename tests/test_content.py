"""image_part and text_part."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from asyncchat import image_part, text_part

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def test_png_bytes() -> None:
    part = image_part(PNG)
    assert part["type"] == "image_url"
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == PNG
    assert "detail" not in part["image_url"]


def test_jpeg_file_with_misleading_name(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"  # the bytes decide, not the name
    path.write_bytes(JPEG)
    part = image_part(path, detail="low")
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert part["image_url"]["detail"] == "low"
    assert image_part(str(path))["image_url"]["url"] == part["image_url"]["url"]


def test_gif_and_webp() -> None:
    assert "image/gif" in image_part(b"GIF89a\x01\x00")["image_url"]["url"]
    assert "image/webp" in image_part(b"RIFF\x00\x00\x00\x00WEBPVP8 ")["image_url"]["url"]


def test_urls_pass_through() -> None:
    for url in ("https://example.com/cat.jpg", "http://x/y.png", "data:image/png;base64,AAAA"):
        assert image_part(url) == {"type": "image_url", "image_url": {"url": url}}


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not a PNG, JPEG, GIF or WebP"):
        image_part(b"%PDF-1.7")
    with pytest.raises(ValueError, match="cannot read image file"):
        image_part(tmp_path / "missing.png")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        image_part(text_file)
    with pytest.raises(ValueError, match="detail"):
        image_part(PNG, detail="ultra")
    with pytest.raises(TypeError):
        image_part(42)  # type: ignore[arg-type]


def test_text_part() -> None:
    assert text_part("hi") == {"type": "text", "text": "hi"}
    with pytest.raises(TypeError):
        text_part(3)  # type: ignore[arg-type]
