"""Bad input gets NumPy's kind of error, with a clear message, where the bad call is made."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.exceptions import AxisError

import fuseray as fr

pytestmark = pytest.mark.usefixtures("reference_backend")


def test_mismatched_shapes_name_both_at_the_call():
    a, b = fr.ones(3), fr.ones((2, 4))
    with pytest.raises(ValueError, match=r"broadcast together with shapes \(3,\) \(2,4\)"):
        a + b  # raised here, before any compute


def test_bad_axis_is_axis_error():
    a = fr.ones((2, 3))
    with pytest.raises(AxisError, match="axis 2 is out of bounds for array of dimension 2"):
        a.sum(axis=2)
    with pytest.raises(AxisError):
        fr.mean(a, axis=(0, -3))
    with pytest.raises(ValueError, match="duplicate value in 'axis'"):
        a.max(axis=(1, -1))
    with pytest.raises(AxisError):
        fr.argmax(a, axis=5)
    with pytest.raises(TypeError):
        a.sum(axis=1.5)


@pytest.mark.parametrize("value", [np.array(["a", "b"]), np.array([1 + 2j]), np.array([object()]),
                                   np.array([1, 2], dtype="datetime64[s]")])
def test_unsupported_dtypes_name_the_dtype(value):
    with pytest.raises(TypeError, match=str(value.dtype).replace("[", r"\[").replace("]", r"\]")):
        fr.asarray(value)


def test_unsupported_dtype_arguments():
    with pytest.raises(TypeError, match="complex"):
        fr.zeros(3, dtype=np.complex64)
    with pytest.raises(TypeError, match="complex"):
        fr.ones(3) * 1j
    with pytest.raises(TypeError):
        fr.ones(3).astype(object)


def test_no_loop_for_dtypes_is_numpys_type_error():
    with pytest.raises(TypeError, match="bitwise_and"):
        fr.ones(3) & fr.ones(3)
    with pytest.raises(TypeError):
        -fr.asarray(np.array([True]))
    with pytest.raises(TypeError):
        fr.sign(fr.asarray(np.array([True])))


def test_overflowing_python_int():
    with pytest.raises(OverflowError, match="Python integer 1000 out of bounds for int8"):
        fr.ones(3, dtype=np.int8) + 1000


def test_reductions_without_identity():
    with pytest.raises(ValueError, match="zero-size array to reduction operation maximum"):
        fr.ones((0, 3)).max(axis=0)
    with pytest.raises(ValueError, match="attempt to get argmax of an empty sequence"):
        fr.ones(0).argmax()


def test_negative_integer_power_constant_is_refused_at_the_call():
    with pytest.raises(ValueError, match="Integers to negative integer powers"):
        fr.arange(3) ** -2
    # an exponent that does not fit an unsigned base is refused as NumPy does, before that
    with pytest.raises(OverflowError, match="Python integer -1 out of bounds for uint8"):
        fr.asarray(np.arange(3, dtype=np.uint8)) ** -1


def test_negative_integer_power_data_is_refused_at_compute():
    x = fr.arange(3) ** fr.asarray(np.array([1, -1, 2]))
    with pytest.raises(ValueError, match="Integers to negative integer powers"):
        x.compute()
    # the process stays usable and the array can still be replaced by a good one
    assert (fr.arange(3) ** 2).get().tolist() == [0, 1, 4]


def test_reshape_and_index_errors_are_numpys():
    a = fr.ones((2, 3))
    with pytest.raises(ValueError, match=r"cannot reshape array of size 6 into shape \(4,\)"):
        a.reshape(4)
    with pytest.raises(IndexError, match="index 2 is out of bounds for axis 0 with size 2"):
        a[2]
    with pytest.raises(IndexError, match="too many indices"):
        a[0, 0, 0]


def test_matmul_says_what_is_missing():
    a = fr.ones((2, 2))
    with pytest.raises(TypeError, match="matmul"):
        a @ a


def test_compute_inside_jit_is_a_clear_error():
    @fr.jit
    def f(x):
        if x.sum() > 0:  # needs a concrete value while tracing
            return x
        return -x

    with pytest.raises(RuntimeError, match="inside a function being traced"):
        f(np.ones(3))
