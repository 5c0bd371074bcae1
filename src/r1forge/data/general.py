"""A small general (non-reasoning) chat set: plain answers, no chain of thought, no boxed answer.

It stands in for R1's non-reasoning data (writing, factual QA, translation), so that the
merged SFT stage keeps the model able to answer plainly when no reasoning is asked for.
"""

from __future__ import annotations

import random
from collections.abc import Callable

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Spain": "Madrid",
    "Chile": "Santiago",
    "Cuba": "Havana",
}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "up": "down",
    "fast": "slow",
    "light": "dark",
    "early": "late",
    "open": "closed",
    "happy": "sad",
    "full": "empty",
    "old": "new",
}
WORDS = ["apple", "river", "stone", "cloud", "music", "tiger", "paper", "green", "lemon", "chair"]
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _capital(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."


def _opposite(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(sorted(OPPOSITES))
    return f"What is the opposite of {word}?", f"The opposite of {word} is {OPPOSITES[word]}."


def _reverse(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return f"Spell {word} backwards.", f"{word} backwards is {word[::-1]}."


def _number_word(rng: random.Random) -> tuple[str, str]:
    n = rng.randrange(10)
    return f"Write {n} as a word.", f"{n} is written {NUMBER_WORDS[n]}."


def _greeting(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(NAMES)
    return f"Say hello to {name}.", f"Hello, {name}! Nice to meet you."


def _uppercase(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return f"Write {word} in capital letters.", f"{word.upper()}"


def _letter_count(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return (
        f"How many letters are in the word {word}?",
        f"The word {word} has {NUMBER_WORDS[len(word)]} letters.",
    )


def _first_letter(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return f"What is the first letter of {word}?", f"The first letter of {word} is {word[0]}."


def _introduce(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(NAMES, 2)
    return f"Introduce {a} to {b}.", f"{b}, this is {a}. {a}, meet {b}."


GENERAL_TEMPLATES: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "capital": _capital,
    "opposite": _opposite,
    "reverse": _reverse,
    "number_word": _number_word,
    "greeting": _greeting,
    "uppercase": _uppercase,
    "letter_count": _letter_count,
    "first_letter": _first_letter,
    "introduce": _introduce,
}


def general_pair(rng: random.Random) -> tuple[str, str]:
    """One (question, plain answer) pair from a template picked by the RNG."""
    return GENERAL_TEMPLATES[rng.choice(sorted(GENERAL_TEMPLATES))](rng)
