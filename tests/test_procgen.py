"""Normalized score against hand-computed values (paper constants)."""

import math

import pytest

from procgen_rl.procgen import GAMES, NORMALIZATION, normalized_score


@pytest.mark.parametrize(
    "game, mode, episode_return, expected",
    [
        ("coinrun", "easy", 10.0, 1.0),  # R_max
        ("coinrun", "easy", 5.0, 0.0),  # R_min
        ("coinrun", "easy", 7.5, 0.5),  # (7.5 - 5) / (10 - 5)
        ("starpilot", "easy", 33.25, 0.5),  # (33.25 - 2.5) / (64 - 2.5)
        ("fruitbot", "easy", -1.5, 0.0),  # negative R_min
        ("fruitbot", "hard", 13.35, 0.5),  # (13.35 + 0.5) / 27.7
        ("jumper", "easy", 6.5, 0.5),  # paper easy R_min = 3, not the hard 1
        ("leaper", "easy", 3.0, 0.0),  # paper easy R_min = 3, not the hard 1.5
        ("bigfish", "hard", 0.0, 0.0),
        ("coinrun", "easy", 0.0, -1.0),  # below R_min goes negative, not clipped
    ],
)
def test_normalized_score_hand_values(game, mode, episode_return, expected):
    assert normalized_score(episode_return, game, mode) == pytest.approx(expected)


def test_every_game_has_easy_and_hard_constants():
    for mode in ("easy", "hard"):
        assert set(NORMALIZATION[mode]) == set(GAMES)
        assert all(r_min < r_max for r_min, r_max in NORMALIZATION[mode].values())


def test_modes_without_constants_give_nan():
    assert math.isnan(normalized_score(5.0, "maze", "memory"))
    assert math.isnan(normalized_score(math.nan, "coinrun", "easy"))
