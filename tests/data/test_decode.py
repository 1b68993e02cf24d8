import numpy as np
import pytest
from PIL import Image

from ldm.data.decode import decode_image

from .fixtures import encoded, messy_images, noise_image


@pytest.mark.parametrize("name", sorted(messy_images()))
def test_each_kind_of_file_is_converted_or_skipped_for_its_reason(name):
    data, conversion, skip = messy_images()[name]
    decoded = decode_image(data, min_size=16)
    assert (decoded.converted, decoded.skipped) == (conversion, skip)
    if skip is None:
        assert decoded.image.mode == "RGB" and decoded.image.size == (24, 20)
    else:
        assert decoded.image is None


def test_transparent_pixels_become_white_and_16bit_white_stays_white():
    images = messy_images()
    alpha = np.asarray(decode_image(images["alpha.png"][0]).image)
    sixteen = np.asarray(decode_image(images["sixteen.png"][0]).image)
    assert (alpha == 255).all() and (sixteen == 255).all()


def test_16bit_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 24 * 20).reshape(20, 24).astype(np.uint16)
    pixels = np.asarray(decode_image(encoded(Image.fromarray(ramp), "PNG")).image)[..., 0]
    assert abs(int(pixels[10, 12]) - round(int(ramp[10, 12]) / 257)) <= 1


def test_palette_and_greyscale_with_alpha_are_named_by_their_colours():
    image = noise_image()
    assert decode_image(encoded(image.convert("P"), "PNG")).converted == "palette->RGB"
    assert decode_image(encoded(image.convert("LA"), "PNG")).converted == "greyscale->RGB"


def test_reads_files_as_well_as_bytes(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encoded(noise_image(), "PNG"))
    assert decode_image(path).image.size == (24, 20)
    assert decode_image(tmp_path / "missing.png").skipped == "unreadable"


def test_images_over_the_pixel_limit_are_skipped_before_decoding(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert decode_image(encoded(noise_image(), "PNG")).skipped == "too large"


def test_large_jpegs_are_decoded_at_a_reduced_scale_but_never_below_min_size():
    big = noise_image(400, 300)
    decoded = decode_image(encoded(big, "JPEG"), min_size=70)
    assert decoded.image.size == (100, 75)  # a quarter of the size: 75 >= 70
