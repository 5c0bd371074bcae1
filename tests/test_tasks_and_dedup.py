"""Task generators are deterministic and correct; dedupe and decontamination catch what they should."""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from r1forge.data.dedup import contaminated, exact_duplicates, near_duplicates
from r1forge.data.tasks import TASKS, generate
from r1forge.data.tasks.arithmetic import solve_steps

from .conftest import ROOT


def test_registry_has_both_families() -> None:
    assert {"arithmetic", "countdown"} <= set(TASKS)
    with pytest.raises(KeyError, match="known tasks"):
        generate("nope", random.Random(0), 1)
    with pytest.raises(ValueError, match="difficulty"):
        generate("arithmetic", random.Random(0), 9)


@pytest.mark.parametrize("task", ["arithmetic", "countdown"])
def test_deterministic_by_seed(task: str) -> None:
    first = [generate(task, random.Random(42), d) for d in range(1, 6)]
    again = [generate(task, random.Random(42), d) for d in range(1, 6)]
    assert first == again
    assert first != [generate(task, random.Random(43), d) for d in range(1, 6)]


def test_arithmetic_steps_by_hand() -> None:
    assert solve_steps("3 + 4 * 2") == (11, ["4 * 2 = 8", "3 + 8 = 11"])
    assert solve_steps("(3 + 4) * 2") == (14, ["3 + 4 = 7", "7 * 2 = 14"])
    assert solve_steps("10 - 2 - 3") == (5, ["10 - 2 = 8", "8 - 3 = 5"])


def test_arithmetic_answers_match_python() -> None:
    rng = random.Random(0)
    for _ in range(300):
        level = rng.randint(1, 5)
        problem = generate("arithmetic", rng, level)
        expression = problem.question.removeprefix("Compute ").removesuffix(".")
        assert int(problem.answer) == eval(
            expression
        )  # generator output is digits and + - * ( ) only
        assert 2 <= len(re.findall(r"\d+", expression)) <= 5
        assert problem.thought.splitlines()[-1].endswith(f"= {problem.answer}")


def test_difficulty_changes_size() -> None:
    rng = random.Random(1)
    easy = [len(re.findall(r"\d+", generate("arithmetic", rng, 1).question)) for _ in range(50)]
    hard = [len(re.findall(r"\d+", generate("arithmetic", rng, 5).question)) for _ in range(50)]
    assert max(easy) == 2 and min(hard) >= 4


def test_countdown_solution_reaches_target_using_each_number_once() -> None:
    rng = random.Random(3)
    for _ in range(300):
        problem = generate("countdown", rng, rng.randint(1, 5))
        assert sorted(map(int, re.findall(r"\d+", problem.final))) == sorted(
            problem.meta["numbers"]
        )
        value = eval(re.sub(r"(\d+)", r"Fraction(\1)", problem.final), {"Fraction": Fraction})
        assert value == int(problem.answer)
        assert problem.verifier == "countdown"


def test_exact_and_near_duplicates() -> None:
    texts = ["Compute 3 + 4.", "compute 3  +  4 .", "Compute 13 + 4."]
    assert exact_duplicates(texts) == [False, True, False]
    long_a = "the quick brown fox jumps over the lazy dog near the river bank today"
    long_b = long_a + " again"
    assert near_duplicates(
        [long_a, long_b, "an entirely different sentence about cats"], threshold=0.8
    ) == [False, True, False]
    assert near_duplicates([long_a, long_b], threshold=1.0) == [False, False]


def test_decontamination_by_ngrams() -> None:
    evals = [
        "Compute 3 + 4.",
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
    ]
    train = [
        "Compute 3 + 4.",  # the eval question itself
        "Compute 3 + 4 * 2.",  # a different problem
        "zero one two three four five six seven eight nine ten eleven twelve thirteen",  # shares a 13-gram
        "one two three",
    ]
    assert contaminated(train, evals, n=13) == [True, False, True, False]


def test_template_ngrams_are_not_contamination() -> None:
    template = "use {} once each with + - * / to make the target number please {}"
    evals = [template.format(f"{i} , {i + 1}", i) for i in range(40)]
    train = [template.format("77 , 78", 99)]
    assert contaminated(train, evals, n=8) == [False]


def test_held_out_eval_sets_cover_what_training_does_not(tmp_path: Path) -> None:
    """Issue 17: eval sets at a difficulty and of a task the training sets do not hold."""
    from r1forge.config import load_recipe
    from r1forge.data.jsonl import read_jsonl
    from r1forge.stages import data

    recipe = load_recipe(
        ROOT / "recipes/ci.yaml",
        [
            "data.tasks={arithmetic: {difficulties: [1, 2]}}",
            "data.held_out={arithmetic_d5: {task: arithmetic, difficulties: [5], size: 6},"
            " countdown: {task: countdown, difficulties: [2]}}",
        ],
    )
    report = data.build_datasets(recipe, tmp_path / "data")
    assert report["eval/arithmetic_d5"] == 6 and report["eval/countdown"] == 16
    hard = read_jsonl(tmp_path / "data/eval/arithmetic_d5.jsonl", "prompt")
    assert {r.difficulty for r in hard} == {5} and hard[
        0
    ].id == "arithmetic-eval-arithmetic_d5-000000"
    countdown = read_jsonl(tmp_path / "data/eval/countdown.jsonl", "prompt")
    assert {r.task for r in countdown} == {"countdown"} and all(r.meta for r in countdown)
    trained = read_jsonl(tmp_path / "data/rl_prompts.jsonl", "prompt")
    assert {r.task for r in trained} == {"arithmetic"} and max(r.difficulty for r in trained) == 2
    with pytest.raises(Exception, match="task names"):
        load_recipe(
            ROOT / "recipes/ci.yaml",
            ["data.held_out={arithmetic: {task: arithmetic, difficulties: [5]}}"],
        )
