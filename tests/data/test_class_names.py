"""Class names are checked: two classes of one name are refused."""

from __future__ import annotations

import pytest
from conftest import one_line

from gctxseg.clinical.measurements import (
    MeasurementOptions,
    class_names_for,
)


@pytest.mark.parametrize(
    "names, duplicate",
    [(("fluid", "fluid"), "'fluid' would name classes 1 and 2"), (("class2",), "'class2' would name classes 1 and 2")],
)
def test_duplicate_class_names_are_refused(names, duplicate):
    with pytest.raises(ValueError, match=duplicate) as err:
        class_names_for(MeasurementOptions(class_names=names), 3)
    assert one_line(err).startswith(f"--class-names {' '.join(names)}:")


def test_distinct_class_names_and_a_class_named_its_own_default_pass():
    assert class_names_for(MeasurementOptions(class_names=("edema", "hole")), 3) == ["edema", "hole"]
    assert class_names_for(MeasurementOptions(class_names=("class1",)), 3) == ["class1", "class2"]
