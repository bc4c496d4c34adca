"""The finalize pipeline's plug-in point: a named step inserted before another runs there."""

import pytest
import trio

from imagefs.errors import UploadRejected
from imagefs.imports import FinalizeStep, Pipeline


def test_a_step_inserted_by_name_runs_in_place_and_its_refusal_names_it():
    ran = []

    def step(name, refuse=False):
        async def run(ctx):
            ran.append(name)
            if refuse:
                raise UploadRejected("bad signature")

        return FinalizeStep(name, run)

    pipeline = Pipeline([step("verify_declared"), step("inspect"), step("store_data")])
    pipeline.insert_before("store_data", step("verify_signature", refuse=True))
    assert [s.name for s in pipeline.steps] == ["verify_declared", "inspect", "verify_signature", "store_data"]
    with pytest.raises(UploadRejected, match=r"^verify_signature: bad signature$"):
        trio.run(pipeline.run, None)
    assert ran == ["verify_declared", "inspect", "verify_signature"]  # nothing stored after a refusal
