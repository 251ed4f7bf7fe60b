"""A failed task's traceback shows the user's own file, line and source first, on every backend."""

from __future__ import annotations

import textwrap

import pytest

from zephyr_arrow import Dataset, ShardFailedError

USER_CODE = textwrap.dedent(
    """
    def boom(x):
        if x == 2:
            raise ValueError("bad row")
        return x
    """
)


def test_a_function_of_the_users_script_is_shown_with_its_file_and_source(ctx, tmp_path):
    path = tmp_path / "user_script.py"
    path.write_text(USER_CODE)
    namespace = {"__name__": "__main__"}  # as in a script: cloudpickle ships such functions by value
    exec(compile(USER_CODE, str(path), "exec"), namespace)
    with pytest.raises(ShardFailedError) as failure:
        ctx.execute(Dataset.from_list([1, 2, 3]).map(namespace["boom"]))
    message = str(failure.value)
    assert "<dynamic-code>" not in message
    own = f'In your code:\n  File "{path}", line 4, in boom\n    raise ValueError("bad row")\n'
    assert own in message
    assert message.index(own) < message.index("Traceback (most recent call last)")
