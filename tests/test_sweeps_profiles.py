"""Machine profiles and routing of traced machine info (anchor study §5.2), one home for both."""

from __future__ import annotations

import os

import pytest

from sweeps.profiles import PROFILES, get_profile, route
from tracer.errors import InputError


@pytest.mark.parametrize(
    "info, expected",
    [
        ({"board_type": "Wormhole", "device_series": "tt-galaxy-wh", "card_count": 32}, "galaxy"),
        ({"board_type": "Wormhole", "device_series": "tt_galaxy_wh", "card_count": 32}, "galaxy"),
        ({"board_type": "Wormhole", "device_series": "n300", "card_count": 4}, "t3k"),
        ({"board_type": "Wormhole", "device_series": "n300", "card_count": 1, "mesh_device_shape": [2, 4]}, "t3k"),
        ({"board_type": "Wormhole", "device_series": "n300", "card_count": 1}, "n300"),
        ({"board_type": "Wormhole", "device_series": "n300 L", "card_count": 1, "mesh_device_shape": [1, 2]}, "n300"),
        ({"board_type": "Wormhole", "device_series": "n150", "card_count": 1}, "n150"),
        ({"board_type": "Blackhole", "device_series": "p150b", "card_count": 1}, "p150"),
        ({"board_type": "Blackhole", "device_series": "p300a", "card_count": 1}, "p300"),
        ({"mesh_device_shape": [4, 8]}, "galaxy"),
        ({"board_type": "Blackhole"}, "p150"),
    ],
)
def test_routing(info, expected):
    assert route(info).name == expected


def test_nothing_identifies_a_machine():
    assert route(None) is None and route({"board_type": "Grayskull"}) is None


def test_profiles_are_complete_and_ship_their_mock_cluster():
    assert set(PROFILES) == {"n150", "n300", "t3k", "galaxy", "p150", "p300"}
    for profile in PROFILES.values():
        assert os.path.exists(profile.mock_cluster_path), profile.name
        assert profile.mesh_shape[0] * profile.mesh_shape[1] == profile.chips
        assert profile.queue == f"sweeps.{profile.name}"
        assert route(profile.machine_info()) is profile  # a profile's own machine info routes back to it


def test_unknown_machine_is_one_clear_error():
    with pytest.raises(InputError, match="unknown machine type"):
        get_profile("h100")
    assert get_profile("T3K").name == "t3k"


TT_SMI_N300 = """
Gathering Information ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 100% 0:00:00
                All available boards on host:
┏━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┓
┃ PCI Dev ID ┃ Board Type ┃ Device Series ┃ Board Number     ┃
┡━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━┩
│ 0          │ Wormhole   │ n300 L        │ 010001451170801d │
│ N/A        │ Wormhole   │ n300 R        │ 010001451170801d │
│ 1          │ Wormhole   │ n300 L        │ 010001451170802e │
│ N/A        │ Wormhole   │ n300 R        │ 010001451170802e │
└────────────┴────────────┴───────────────┴──────────────────┘
                  Boards that can be reset:
┏━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┓
┃ PCI Dev ID ┃ Board Type ┃ Device Series ┃ Board Number     ┃
┡━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━┩
│ 0          │ Wormhole   │ n300 L        │ 010001451170801d │
│ 1          │ Wormhole   │ n300 L        │ 010001451170802e │
└────────────┴────────────┴───────────────┴──────────────────┘
"""


def test_tt_smi_listing_gives_machine_info_that_routes():
    from tracer.machine import parse_tt_smi_list

    info = parse_tt_smi_list(TT_SMI_N300)
    assert info == {"board_type": "Wormhole", "device_series": "n300", "card_count": 2, "device_count": 4}
    assert route(info).name == "n300"
    assert parse_tt_smi_list("No Tenstorrent devices found.") is None
