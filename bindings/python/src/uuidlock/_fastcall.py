"""A faster way into wasmtime-py's component functions.

``wasmtime.component.Func.__call__`` asks for the function's type on every
call and walks it through the C API again for every value it converts (a
record's fields, a variant's cases, whether it is tagged): about 50 µs of
Python per call here, a good part of an uncontended acquire. The types of an
instance's functions never change, so this module computes them once per
instance and then converts and calls exactly as ``Func.__call__`` does.

It leans on wasmtime-py 50's internals (the ``_types`` classes, ``_ffi``,
``enter_wasm``); ``prepare`` returns None if anything is not as expected,
and the caller then uses ``Func.__call__``.
"""

from __future__ import annotations

from ctypes import byref, pointer
from typing import Any, Callable, List, Optional

try:
    from wasmtime import _ffi as ffi
    from wasmtime.component import _types as T
    from wasmtime.component._enter import enter_wasm
except ImportError:  # pragma: no cover - another wasmtime-py
    T = None  # type: ignore[assignment]


if T is not None:

    class _Record(T.RecordType):
        _f_fields: List[Any]

        @property
        def fields(self) -> List[Any]:
            return self._f_fields

    class _Variant(T.VariantType):
        _f_cases: List[Any]
        _f_tagged: bool

        @property
        def cases(self) -> List[Any]:
            return self._f_cases

        def _tagged(self) -> bool:
            return self._f_tagged

    class _Option(T.OptionType):
        _f_payload: Any
        _f_tagged: bool

        @property
        def payload(self) -> Any:
            return self._f_payload

        def _tagged(self) -> bool:
            return self._f_tagged

    class _Result(T.ResultType):
        _f_ok: Any
        _f_err: Any
        _f_tagged: bool

        @property
        def ok(self) -> Any:
            return self._f_ok

        @property
        def err(self) -> Any:
            return self._f_err

        def _tagged(self) -> bool:
            return self._f_tagged

    class _List(T.ListType):
        _f_element: Any

        @property
        def element(self) -> Any:
            return self._f_element


def _freeze(ty: Any) -> Any:
    """``ty`` with its structure computed once (its class swapped for one
    that answers from the cache)."""
    if ty is None or type(ty) in (_Record, _Variant, _Option, _Result, _List):
        return ty
    obj: Any = ty  # its class changes below
    if type(ty) is T.RecordType:
        fields = [(name, _freeze(t)) for name, t in ty.fields]
        obj.__class__ = _Record
        obj._f_fields = fields
    elif type(ty) is T.VariantType:
        cases = [(name, _freeze(t)) for name, t in ty.cases]
        tagged = ty._tagged()
        obj.__class__ = _Variant
        obj._f_cases, obj._f_tagged = cases, tagged
    elif type(ty) is T.OptionType:
        payload = _freeze(ty.payload)
        tagged = ty._tagged()
        obj.__class__ = _Option
        obj._f_payload, obj._f_tagged = payload, tagged
    elif type(ty) is T.ResultType:
        ok, err = _freeze(ty.ok), _freeze(ty.err)
        tagged = ty._tagged()
        obj.__class__ = _Result
        obj._f_ok, obj._f_err, obj._f_tagged = ok, err, tagged
    elif type(ty) is T.ListType:
        element = _freeze(ty.element)
        obj.__class__ = _List
        obj._f_element = element
    elif not isinstance(ty, (T.Bool, T.String, T.U64, T.U32, T.U8, T.S64, T.S32, T.F64, T.F32)):
        raise TypeError(f"no fast path for {type(ty).__name__}")
    return ty


def prepare(func: Any, store: Any) -> Optional[Callable[..., Any]]:
    """A function that calls ``func`` in ``store`` as ``func(store, *args)``
    does, with the types computed now; None if this wasmtime-py is not the
    one this module knows."""
    if T is None:
        return None
    try:
        fty = func.type(store)
        params: List[Any] = [_freeze(t) for _name, t in fty.params]
        result = _freeze(fty.result)
        raw = func._func
        val_t = ffi.wasmtime_component_val_t
        call_c = ffi.wasmtime_component_func_call
        val_delete = ffi.wasmtime_component_val_delete
    except Exception:
        return None
    count = len(params)

    def call(*args: Any) -> Any:
        if len(args) != count:
            raise TypeError(f"wrong number of parameters provided: given {len(args)}, expected {count}")
        param_capi = (val_t * count)()
        n = 0
        try:
            for ty, val in zip(params, args):
                ty.convert_to_c(store, val, pointer(param_capi[n]))
                n += 1
            result_space = val_t() if result is not None else None

            def run() -> Any:
                return call_c(byref(raw), store._context(), param_capi, n,
                              byref(result_space) if result_space is not None else None,
                              1 if result is not None else 0)

            enter_wasm(run)
            return result.convert_from_c(result_space) if result is not None else None
        finally:
            for i in range(n):
                val_delete(byref(param_capi[i]))

    return call
