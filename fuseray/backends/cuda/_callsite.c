/* fuseray.backends.cuda._callsite: the cached @jit call of a one-kernel plan, in C.

Stage: backend (CUDA), beside launch.py; an optional accelerator. Where it is not built,
launch.py's Python path runs every call, with the same results.

A ``Site`` is built in Python (``launch.direct``'s ``site``) for one exact call description:
each argument's kind (a fuseray array whose buffer holds a DeviceArray of this shape, dtype and
strides, or a Python scalar of this exact type), the binding's prepared state for those strides
(kernel program, launch dimensions, argument layout, constant arguments), and the Python
functions it leans on (current stream, output allocation, result wrapping, the launch fallback).
Calling it with a call's argument tuple either

- returns None, having done nothing, when the call does not match (another shape, a lazy
  argument, tracing, the CPU selected, fast math toggled, ``config.compiled_calls`` off): the
  caller takes the Python path; or
- runs the call exactly as ``Binding.launch`` would: declares every input used on the current
  stream, allocates the outputs there, packs the kernel's arguments into 8-byte slots, and calls
  the driver's ``cuLaunchKernel`` through its address; it returns the wrapped result.

A launch the driver refuses (no context current on this thread, say) is handed, with the packed
arguments, to the Python fallback, which makes the context current or raises the CUDA error.
Python errors of the steps (allocation, scalar conversion) propagate as they would in Python.

The argument pointer array is NULL-terminated: the driver reads only as many entries as the
kernel has parameters, and the test launcher (``set_test_launcher``) uses the NULL to count them.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef Py_TPFLAGS_HAVE_VECTORCALL
#define Py_TPFLAGS_HAVE_VECTORCALL _Py_TPFLAGS_HAVE_VECTORCALL
#endif

typedef int (*launch_fn)(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                         unsigned bz, unsigned shared, void *stream, void **params, void **extra);

#define MAX_SLOTS 256

/* attribute names, interned once */
static PyObject *s_storage, *s_node, *s_op, *s_arg, *s_value, *s_shape, *s_dtype, *s_strides,
    *s_memory, *s_device_id, *s_stream, *s_ptr, *s_use_on, *s_function, *s_device, *s_fast_math,
    *s_trace, *s_buffer, *s_cpu, *s_compiled_calls;

typedef struct {
    PyObject *type; /* a scalar argument: its exact Python type; NULL for an array */
    PyObject *shape, *dtype, *strides;
} ArgSpec;

typedef struct {
    Py_ssize_t arg;     /* the argument it reads, or -1 for a captured array */
    PyObject *captured; /* the captured DeviceArray */
    unsigned long long shift;
} InputSpec;

typedef struct {
    PyObject *shape, *dtype, *strides, *nbytes;
} OutputSpec;

typedef struct {
    Py_ssize_t arg;
    PyObject *convert; /* the parameter's NumPy scalar type */
} ParamSpec;

/* the Python objects a site leans on, in the order of the constructor's ``env`` (whose entry 9,
   the launch address, is not an object and is kept apart) */
enum {
    ENV_NDARRAY, ENV_DEVICE_ARRAY, ENV_GET_STREAM, ENV_EMPTY, ENV_WRAP, ENV_CONFIG, ENV_FAST_MATH,
    ENV_TRACE_STATE, ENV_FALLBACK, ENV_DEVICE_ID, ENV_COUNT
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t nargs, ninputs, noutputs, nparams;
    ArgSpec *args;
    InputSpec *inputs;
    OutputSpec *outputs;
    ParamSpec *params;
    PyObject *tail;  /* tuple: constant arguments between the outputs and the parameters */
    char codes[MAX_SLOTS];
    PyObject *program;
    PyObject *env[ENV_COUNT];
    unsigned dims[7];
    Py_ssize_t pick;
    launch_fn launch;
} Site;

/* ------------------------------------------------------------------------------- packing */

static int
slot_size(char code)
{
    switch (code) {
    case '?': case 'b': case 'B': return 1;
    case 'h': case 'H': case 'e': return 2;
    case 'i': case 'I': case 'f': return 4;
    case 'q': case 'Q': case 'd': return 8;
    default: return 0;
    }
}

/* Write ``v`` into an 8-byte slot as ``code`` (struct's codes; the slot is zeroed first). Python
   ints and floats are converted here with range checks; anything else (the NumPy scalars that
   parameters are converted to) must expose exactly the slot's bytes through the buffer protocol. */
static int
pack(char code, PyObject *v, uint64_t *slot)
{
    unsigned char *p = (unsigned char *)slot;
    *slot = 0;
    if (PyLong_Check(v)) {
        if (code == 'Q') {
            unsigned long long x = PyLong_AsUnsignedLongLong(v);
            if (x == (unsigned long long)-1 && PyErr_Occurred())
                return -1;
            memcpy(p, &x, 8);
            return 0;
        }
        long long x = PyLong_AsLongLong(v);
        if (x == -1 && PyErr_Occurred())
            return -1;
        switch (code) {
        case 'q': memcpy(p, &x, 8); return 0;
        case 'i': if (x < INT32_MIN || x > INT32_MAX) break;
            { int32_t y = (int32_t)x; memcpy(p, &y, 4); return 0; }
        case 'I': if (x < 0 || x > UINT32_MAX) break;
            { uint32_t y = (uint32_t)x; memcpy(p, &y, 4); return 0; }
        case 'h': if (x < INT16_MIN || x > INT16_MAX) break;
            { int16_t y = (int16_t)x; memcpy(p, &y, 2); return 0; }
        case 'H': if (x < 0 || x > UINT16_MAX) break;
            { uint16_t y = (uint16_t)x; memcpy(p, &y, 2); return 0; }
        case 'b': if (x < INT8_MIN || x > INT8_MAX) break;
            { int8_t y = (int8_t)x; memcpy(p, &y, 1); return 0; }
        case 'B': if (x < 0 || x > UINT8_MAX) break;
            { uint8_t y = (uint8_t)x; memcpy(p, &y, 1); return 0; }
        case '?': p[0] = x != 0; return 0;
        default:
            PyErr_Format(PyExc_TypeError, "cannot pack an int as kernel parameter '%c'", code);
            return -1;
        }
        PyErr_Format(PyExc_OverflowError, "%lld does not fit kernel parameter '%c'", x, code);
        return -1;
    }
    if (PyFloat_Check(v) && (code == 'f' || code == 'd')) {
        double x = PyFloat_AS_DOUBLE(v);
        if (code == 'd') {
            memcpy(p, &x, 8);
        } else {
            float y = (float)x;
            memcpy(p, &y, 4);
        }
        return 0;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(v, &view, PyBUF_SIMPLE) < 0)
        return -1;
    int size = slot_size(code);
    if (size == 0 || view.len != size) {
        PyErr_Format(PyExc_TypeError, "a %zd-byte %.100s cannot fill kernel parameter '%c'",
                     view.len, Py_TYPE(v)->tp_name, code);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(p, view.buf, (size_t)size);
    PyBuffer_Release(&view);
    return 0;
}

/* ------------------------------------------------------------------------------- the call */

/* Borrowed-reference reads of slot attributes would be unsafe (another thread may replace them),
   so every read is a new reference. */
static inline PyObject *
get(PyObject *o, PyObject *name)
{
    return PyObject_GetAttr(o, name);
}

/* ``o.ptr`` (a device address, a stream or function handle) into ``*address``; -1 with an
   exception set where it has none or it is not an unsigned integer. */
static int
read_ptr(PyObject *o, uint64_t *address)
{
    PyObject *p = get(o, s_ptr);
    if (p == NULL)
        return -1;
    *address = PyLong_AsUnsignedLongLong(p);
    Py_DECREF(p);
    return *address == (uint64_t)-1 && PyErr_Occurred() ? -1 : 0;
}

/* 1 when ``a`` equals ``b`` (identity first, as ``==`` on tuples and dtypes), 0 when not,
   -1 on error. */
static inline int
same(PyObject *a, PyObject *b)
{
    return a == b ? 1 : PyObject_RichCompareBool(a, b, Py_EQ);
}

/* The DeviceArray behind fuseray array ``a`` if it matches ``spec`` (new reference); NULL with
   no error set when it does not. */
static PyObject *
array_value(Site *self, PyObject *a, ArgSpec *spec)
{
    if ((PyObject *)Py_TYPE(a) != self->env[ENV_NDARRAY])
        return NULL;
    PyObject *storage = get(a, s_storage);
    if (storage == NULL)
        return NULL;
    int plain = storage == Py_None;
    Py_DECREF(storage);
    if (!plain) /* a view of a written storage: node_of brings it up to date, in Python */
        return NULL;
    PyObject *node = get(a, s_node);
    if (node == NULL)
        return NULL;
    PyObject *op = get(node, s_op), *v = NULL;
    if (op != NULL && (op == s_buffer || PyUnicode_Compare(op, s_buffer) == 0)) {
        PyObject *arg = get(node, s_arg);
        if (arg != NULL && PyTuple_Check(arg) && PyTuple_GET_SIZE(arg) > 0)
            v = get(PyTuple_GET_ITEM(arg, 0), s_value);
        Py_XDECREF(arg);
    }
    Py_XDECREF(op);
    Py_DECREF(node);
    if (v == NULL || (PyObject *)Py_TYPE(v) != self->env[ENV_DEVICE_ARRAY])
        goto miss;
    PyObject *names[3] = {s_shape, s_dtype, s_strides};
    PyObject *want[3] = {spec->shape, spec->dtype, spec->strides};
    for (int k = 0; k < 3; k++) {
        PyObject *x = get(v, names[k]);
        int eq = x == NULL ? -1 : same(x, want[k]);
        Py_XDECREF(x);
        if (eq != 1)
            goto miss;
    }
    return v;
miss:
    Py_XDECREF(v);
    return NULL;
}

/* -1 on error, 0 when the call is not this site's, 1 to go on. */
static int
call_matches(Site *self)
{
    PyObject *device = get(self->env[ENV_CONFIG], s_device);
    if (device == NULL)
        return -1;
    int cpu = PyUnicode_Check(device) && PyUnicode_Compare(device, s_cpu) == 0;
    Py_DECREF(device);
    if (cpu)
        return 0;
    PyObject *on = get(self->env[ENV_CONFIG], s_compiled_calls);
    if (on == NULL)
        return -1;
    int compiled = PyObject_IsTrue(on);
    Py_DECREF(on);
    if (compiled <= 0)
        return compiled;
    PyObject *fast = get(self->env[ENV_CONFIG], s_fast_math);
    if (fast == NULL)
        return -1;
    int eq = same(fast, self->env[ENV_FAST_MATH]);
    Py_DECREF(fast);
    if (eq != 1)
        return eq;
    PyObject *trace = get(self->env[ENV_TRACE_STATE], s_trace);
    if (trace == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 1;
    }
    int none = trace == Py_None;
    Py_DECREF(trace);
    return none;
}

static PyObject *
site_call(Site *self, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !PyTuple_Check(argv[0])) {
        PyErr_SetString(PyExc_TypeError, "Site takes one tuple of call arguments");
        return NULL;
    }
    PyObject *call = argv[0];
    if (PyTuple_GET_SIZE(call) != self->nargs)
        Py_RETURN_NONE;
    int ok = call_matches(self);
    if (ok <= 0)
        return ok < 0 ? NULL : Py_NewRef(Py_None);

    PyObject *values[MAX_SLOTS]; /* per argument: its DeviceArray (arrays only) */
    uint64_t slots[MAX_SLOTS];
    void *pointers[MAX_SLOTS + 1];
    PyObject *held[MAX_SLOTS]; /* outputs, then converted parameters: released at the end */
    PyObject *stream = NULL, *picked = NULL, *result = NULL;
    Py_ssize_t i, nvalues = 0, nheld = 0, s = 0;

    for (i = 0; i < self->nargs; i++) {
        PyObject *a = PyTuple_GET_ITEM(call, i);
        ArgSpec *spec = &self->args[i];
        values[i] = NULL;
        nvalues = i + 1;
        if (spec->type != NULL) {
            if ((PyObject *)Py_TYPE(a) != spec->type)
                goto miss;
            continue;
        }
        values[i] = array_value(self, a, spec);
        if (values[i] == NULL) {
            if (PyErr_Occurred()) { /* a broken attribute: let the Python path report it */
                if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                    goto fail;
                PyErr_Clear();
            }
            goto miss;
        }
    }

    /* from here on the call is this site's: no more misses */
    stream = PyObject_Vectorcall(self->env[ENV_GET_STREAM], &self->env[ENV_DEVICE_ID], 1, NULL);
    if (stream == NULL)
        goto fail;
    uint64_t stream_address;
    if (read_ptr(stream, &stream_address) < 0)
        goto fail;
    void *stream_handle = (void *)(uintptr_t)stream_address;

    for (Py_ssize_t k = 0; k < self->ninputs; k++, s++) {
        InputSpec *in = &self->inputs[k];
        PyObject *v = in->arg < 0 ? in->captured : values[in->arg];
        PyObject *memory = get(v, s_memory);
        if (memory == NULL)
            goto fail;
        PyObject *dev = get(memory, s_device_id);
        int same_device = dev == NULL ? -1 : same(dev, self->env[ENV_DEVICE_ID]);
        if (same_device == 0)
            PyErr_Format(PyExc_ValueError,
                         "an input lives on CUDA device %R, but the current device is %R", dev,
                         self->env[ENV_DEVICE_ID]);
        Py_XDECREF(dev);
        PyObject *last = same_device == 1 ? get(memory, s_stream) : NULL;
        Py_DECREF(memory);
        if (last == NULL)
            goto fail;
        if (last != stream) { /* ordered after its last use: DeviceArray.use_on */
            PyObject *r = PyObject_CallMethodOneArg(v, s_use_on, stream);
            if (r == NULL) {
                Py_DECREF(last);
                goto fail;
            }
            Py_DECREF(r);
        }
        Py_DECREF(last);
        if (read_ptr(v, &slots[s]) < 0)
            goto fail;
        slots[s] += in->shift;
    }
    for (Py_ssize_t k = 0; k < self->noutputs; k++, s++) {
        OutputSpec *o = &self->outputs[k];
        PyObject *eargs[5] = {o->shape, o->dtype, stream, o->strides, o->nbytes};
        PyObject *out = PyObject_Vectorcall(self->env[ENV_EMPTY], eargs, 5, NULL);
        if (out == NULL)
            goto fail;
        held[nheld++] = out;
        if (read_ptr(out, &slots[s]) < 0)
            goto fail;
        if (k == self->pick)
            picked = out;
    }
    Py_ssize_t first_tail = s;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(self->tail); k++, s++)
        if (pack(self->codes[s], PyTuple_GET_ITEM(self->tail, k), &slots[s]) < 0)
            goto fail;
    Py_ssize_t first_param = s;
    for (Py_ssize_t k = 0; k < self->nparams; k++, s++) {
        ParamSpec *prm = &self->params[k];
        PyObject *x = PyTuple_GET_ITEM(call, prm->arg);
        PyObject *converted = PyObject_Vectorcall(prm->convert, &x, 1, NULL);
        if (converted == NULL)
            goto fail;
        held[nheld++] = converted;
        if (pack(self->codes[s], converted, &slots[s]) < 0)
            goto fail;
    }
    for (Py_ssize_t k = 0; k < s; k++)
        pointers[k] = &slots[k];
    pointers[s] = NULL;

    PyObject *function = get(self->program, s_function); /* a tier upgrade may replace it */
    if (function == NULL)
        goto fail;
    uint64_t function_address = 0;
    if (read_ptr(function, &function_address) < 0 || function_address == 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "a kernel without a function handle");
        Py_DECREF(function);
        goto fail;
    }
    void *handle = (void *)(uintptr_t)function_address;
    unsigned *d = self->dims;
    int status;
    /* without the GIL, as cuda.bindings calls it: a launch may wait for room in the queue,
       behind work (a host callback, say) that needs another Python thread to run */
    Py_BEGIN_ALLOW_THREADS
    status = self->launch(handle, d[0], d[1], d[2], d[3], d[4], d[5], d[6], stream_handle,
                          pointers, NULL);
    Py_END_ALLOW_THREADS
    if (status != 0) {
        /* the Python launch: makes the context current, or raises the driver's error */
        PyObject *list = PyList_New(s);
        if (list == NULL) {
            Py_DECREF(function);
            goto fail;
        }
        Py_ssize_t k;
        for (k = 0; k < first_tail; k++) {
            PyObject *n = PyLong_FromUnsignedLongLong(slots[k]);
            if (n == NULL)
                break;
            PyList_SET_ITEM(list, k, n);
        }
        if (k == first_tail) {
            for (; k < first_param; k++)
                PyList_SET_ITEM(list, k, Py_NewRef(PyTuple_GET_ITEM(self->tail, k - first_tail)));
            for (; k < s; k++)
                PyList_SET_ITEM(list, k, Py_NewRef(held[self->noutputs + k - first_param]));
        }
        PyObject *r = NULL;
        if (k == s) {
            PyObject *fargs[3] = {function, list, stream};
            r = PyObject_Vectorcall(self->env[ENV_FALLBACK], fargs, 3, NULL);
        }
        Py_DECREF(list);
        Py_DECREF(function);
        if (r == NULL)
            goto fail;
        Py_DECREF(r);
    } else {
        Py_DECREF(function);
    }
    result = PyObject_Vectorcall(self->env[ENV_WRAP], &picked, 1, NULL);

fail:
    /* outputs and parameters are dropped only now: an output's memory is freed (or recycled) on
       its stream after the launch, as Binding.launch's would be */
    for (Py_ssize_t k = 0; k < nheld; k++)
        Py_DECREF(held[k]);
    Py_XDECREF(stream);
    for (i = 0; i < nvalues; i++)
        Py_XDECREF(values[i]);
    return result;

miss:
    for (i = 0; i < nvalues; i++)
        Py_XDECREF(values[i]);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------- construction */

static PyObject *site_not_ready(PyObject *, PyObject *const *, size_t, PyObject *);

static void
site_clear_specs(Site *self)
{
    for (Py_ssize_t i = 0; i < self->nargs && self->args; i++) {
        Py_XDECREF(self->args[i].type);
        Py_XDECREF(self->args[i].shape);
        Py_XDECREF(self->args[i].dtype);
        Py_XDECREF(self->args[i].strides);
    }
    for (Py_ssize_t i = 0; i < self->ninputs && self->inputs; i++)
        Py_XDECREF(self->inputs[i].captured);
    for (Py_ssize_t i = 0; i < self->noutputs && self->outputs; i++) {
        Py_XDECREF(self->outputs[i].shape);
        Py_XDECREF(self->outputs[i].dtype);
        Py_XDECREF(self->outputs[i].strides);
        Py_XDECREF(self->outputs[i].nbytes);
    }
    for (Py_ssize_t i = 0; i < self->nparams && self->params; i++)
        Py_XDECREF(self->params[i].convert);
    PyMem_Free(self->args);
    PyMem_Free(self->inputs);
    PyMem_Free(self->outputs);
    PyMem_Free(self->params);
    self->args = NULL;
    self->inputs = NULL;
    self->outputs = NULL;
    self->params = NULL;
    self->nargs = self->ninputs = self->noutputs = self->nparams = 0;
}

static int
site_traverse(Site *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->ninputs && self->inputs; i++)
        Py_VISIT(self->inputs[i].captured);
    Py_VISIT(self->tail);
    Py_VISIT(self->program);
    for (int k = 0; k < ENV_COUNT; k++)
        Py_VISIT(self->env[k]);
    return 0;
}

static int
site_clear(Site *self)
{
    site_clear_specs(self);
    Py_CLEAR(self->tail);
    Py_CLEAR(self->program);
    for (int k = 0; k < ENV_COUNT; k++)
        Py_CLEAR(self->env[k]);
    return 0;
}

static void
site_dealloc(Site *self)
{
    PyObject_GC_UnTrack(self);
    site_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
bad(const char *what)
{
    PyErr_Format(PyExc_ValueError, "Site: %s", what);
    return -1;
}

/* Site(args, inputs, outputs, tail, params, codes, program, dims, pick, env)

   args:    per call argument, ``(shape, dtype, strides)`` of its DeviceArray or the exact type
            of its Python scalar
   inputs:  per kernel input, ``(argument index, byte shift)`` or ``(captured DeviceArray, shift)``
   outputs: per output, ``(shape, dtype, strides, nbytes)`` as ``launch._empty`` takes them
   tail:    the constant arguments after the output pointers
   params:  per jit parameter, ``(argument index, NumPy scalar type)``
   codes:   bytes, one struct code per kernel argument
   program: read for ``.function.ptr`` on every call
   dims:    ``(gx, gy, gz, bx, by, bz, shared)``
   pick:    which output the call returns
   env:     ``(ndarray, DeviceArray, get_stream, empty, wrap, config, fast_math, trace_state,
            fallback, launch address, device id)`` */
static int
site_init(Site *self, PyObject *a, PyObject *kw)
{
    PyObject *args, *inputs, *outputs, *tail, *params, *program, *dims, *env;
    const char *codes;
    Py_ssize_t ncodes, pick;
    if (kw != NULL && PyDict_GET_SIZE(kw) != 0)
        return bad("takes no keyword arguments");
    if (!PyArg_ParseTuple(a, "O!O!O!O!O!y#OO!nO!:Site", &PyTuple_Type, &args, &PyTuple_Type,
                          &inputs, &PyTuple_Type, &outputs, &PyTuple_Type, &tail, &PyTuple_Type,
                          &params, &codes, &ncodes, &program, &PyTuple_Type, &dims, &pick,
                          &PyTuple_Type, &env))
        return -1;
    site_clear(self);
    self->vectorcall = site_not_ready;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args), nin = PyTuple_GET_SIZE(inputs),
               nout = PyTuple_GET_SIZE(outputs), npar = PyTuple_GET_SIZE(params);
    if (nargs > MAX_SLOTS || ncodes > MAX_SLOTS)
        return bad("too many arguments for the compiled call path");
    if (ncodes != nin + nout + PyTuple_GET_SIZE(tail) + npar)
        return bad("one code per kernel argument");
    for (Py_ssize_t k = 0; k < ncodes; k++)
        if (slot_size(codes[k]) == 0)
            return bad("unknown argument code");
    if (nout < 1 || pick < 0 || pick >= nout)
        return bad("pick must name an output");
    if (PyTuple_GET_SIZE(dims) != 7 || PyTuple_GET_SIZE(env) != 11)
        return bad("dims takes 7 values and env 11");

    self->args = PyMem_Calloc((size_t)nargs + 1, sizeof(ArgSpec));
    self->inputs = PyMem_Calloc((size_t)nin + 1, sizeof(InputSpec));
    self->outputs = PyMem_Calloc((size_t)nout + 1, sizeof(OutputSpec));
    self->params = PyMem_Calloc((size_t)npar + 1, sizeof(ParamSpec));
    if (!self->args || !self->inputs || !self->outputs || !self->params) {
        PyErr_NoMemory();
        return -1;
    }
    self->nargs = nargs;
    self->ninputs = nin;
    self->noutputs = nout;
    self->nparams = npar;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *x = PyTuple_GET_ITEM(args, i);
        if (PyType_Check(x)) {
            self->args[i].type = Py_NewRef(x);
        } else if (PyTuple_Check(x) && PyTuple_GET_SIZE(x) == 3) {
            self->args[i].shape = Py_NewRef(PyTuple_GET_ITEM(x, 0));
            self->args[i].dtype = Py_NewRef(PyTuple_GET_ITEM(x, 1));
            self->args[i].strides = Py_NewRef(PyTuple_GET_ITEM(x, 2));
        } else {
            return bad("an argument is a type or (shape, dtype, strides)");
        }
    }
    for (Py_ssize_t i = 0; i < nin; i++) {
        PyObject *x = PyTuple_GET_ITEM(inputs, i);
        if (!PyTuple_Check(x) || PyTuple_GET_SIZE(x) != 2)
            return bad("an input is (source, shift)");
        PyObject *src = PyTuple_GET_ITEM(x, 0);
        unsigned long long shift = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(x, 1));
        if (shift == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        self->inputs[i].shift = shift;
        if (PyLong_Check(src)) {
            Py_ssize_t k = PyLong_AsSsize_t(src);
            if (k < 0 || k >= nargs || self->args[k].type != NULL)
                return bad("an input must read an array argument");
            self->inputs[i].arg = k;
        } else {
            self->inputs[i].arg = -1;
            self->inputs[i].captured = Py_NewRef(src);
        }
    }
    for (Py_ssize_t i = 0; i < nout; i++) {
        PyObject *x = PyTuple_GET_ITEM(outputs, i);
        if (!PyTuple_Check(x) || PyTuple_GET_SIZE(x) != 4)
            return bad("an output is (shape, dtype, strides, nbytes)");
        self->outputs[i].shape = Py_NewRef(PyTuple_GET_ITEM(x, 0));
        self->outputs[i].dtype = Py_NewRef(PyTuple_GET_ITEM(x, 1));
        self->outputs[i].strides = Py_NewRef(PyTuple_GET_ITEM(x, 2));
        self->outputs[i].nbytes = Py_NewRef(PyTuple_GET_ITEM(x, 3));
    }
    for (Py_ssize_t i = 0; i < npar; i++) {
        PyObject *x = PyTuple_GET_ITEM(params, i);
        if (!PyTuple_Check(x) || PyTuple_GET_SIZE(x) != 2)
            return bad("a parameter is (argument index, scalar type)");
        Py_ssize_t k = PyLong_AsSsize_t(PyTuple_GET_ITEM(x, 0));
        if (k == -1 && PyErr_Occurred())
            return -1;
        if (k < 0 || k >= nargs || self->args[k].type == NULL)
            return bad("a parameter must read a scalar argument");
        self->params[i].arg = k;
        self->params[i].convert = Py_NewRef(PyTuple_GET_ITEM(x, 1));
    }
    memcpy(self->codes, codes, (size_t)ncodes);
    for (int k = 0; k < 7; k++) {
        unsigned long v = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(dims, k));
        if (v == (unsigned long)-1 && PyErr_Occurred())
            return -1;
        if (v > UINT32_MAX)
            return bad("a launch dimension exceeds 32 bits");
        self->dims[k] = (unsigned)v;
    }
    self->pick = pick;
    self->tail = Py_NewRef(tail);
    self->program = Py_NewRef(program);
    for (int k = 0; k < 9; k++)
        self->env[k] = Py_NewRef(PyTuple_GET_ITEM(env, k));
    void *address = PyLong_AsVoidPtr(PyTuple_GET_ITEM(env, 9));
    if (address == NULL)
        return PyErr_Occurred() ? -1 : bad("no launch address");
    self->launch = (launch_fn)address;
    self->env[ENV_DEVICE_ID] = Py_NewRef(PyTuple_GET_ITEM(env, 10));
    self->vectorcall = (vectorcallfunc)site_call;
    return 0;
}

static PyObject *
site_not_ready(PyObject *self, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    PyErr_SetString(PyExc_RuntimeError, "Site was not initialised");
    return NULL;
}

static PyObject *
site_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Site *self = (Site *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->vectorcall = site_not_ready; /* until __init__ succeeds */
    return (PyObject *)self;
}

static PyObject *
site_tp_call(PyObject *self, PyObject *args, PyObject *kw)
{
    return PyVectorcall_Call(self, args, kw);
}

static PyTypeObject SiteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fuseray.backends.cuda._callsite.Site",
    .tp_doc = "A cached @jit call of one kernel, run in C (see the module docstring).",
    .tp_basicsize = sizeof(Site),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = site_new,
    .tp_init = (initproc)site_init,
    .tp_dealloc = (destructor)site_dealloc,
    .tp_traverse = (traverseproc)site_traverse,
    .tp_clear = (inquiry)site_clear,
    .tp_vectorcall_offset = offsetof(Site, vectorcall),
    .tp_call = site_tp_call,
};

/* ------------------------------------------------------------------------------- test launcher */

/* A stand-in for cuLaunchKernel, for tests and the fake driver of benchmarks/overhead_local.py:
   it hands each launch to a Python callable as (function, grid, block, shared, stream, slots),
   slots being the raw 8-byte argument values, and returns what the callable returns. */
static PyObject *test_launcher = NULL;

static int test_launch_locked(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              unsigned, void *, void **);

static int
test_launch(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
            unsigned shared, void *stream, void **params, void **extra)
{
    PyGILState_STATE gil = PyGILState_Ensure(); /* called without the GIL, as the driver is */
    int status = test_launch_locked(f, gx, gy, gz, bx, by, bz, shared, stream, params);
    PyGILState_Release(gil);
    return status;
}

static int
test_launch_locked(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shared, void *stream, void **params)
{
    if (test_launcher == NULL)
        return 1; /* CUDA_ERROR_INVALID_VALUE */
    Py_ssize_t n = 0;
    while (params != NULL && params[n] != NULL)
        n++;
    PyObject *slots = PyTuple_New(n);
    if (slots == NULL)
        return 999;
    for (Py_ssize_t k = 0; k < n; k++) {
        uint64_t v;
        memcpy(&v, params[k], 8);
        PyObject *x = PyLong_FromUnsignedLongLong(v);
        if (x == NULL) {
            Py_DECREF(slots);
            return 999;
        }
        PyTuple_SET_ITEM(slots, k, x);
    }
    PyObject *r = PyObject_CallFunction(test_launcher, "K(III)(III)IKO",
                                        (unsigned long long)(uintptr_t)f, gx, gy, gz, bx, by, bz,
                                        shared, (unsigned long long)(uintptr_t)stream, slots);
    Py_DECREF(slots);
    if (r == NULL) {
        PyErr_WriteUnraisable(test_launcher);
        return 999; /* CUDA_ERROR_UNKNOWN */
    }
    long status = PyLong_AsLong(r);
    Py_DECREF(r);
    if (status == -1 && PyErr_Occurred()) {
        PyErr_WriteUnraisable(test_launcher);
        return 999;
    }
    return (int)status;
}

static PyObject *
set_test_launcher(PyObject *module, PyObject *fn)
{
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "the test launcher must be callable or None");
        return NULL;
    }
    Py_XSETREF(test_launcher, fn == Py_None ? NULL : Py_NewRef(fn));
    return PyLong_FromVoidPtr((void *)(uintptr_t)test_launch);
}

static PyMethodDef methods[] = {
    {"set_test_launcher", set_test_launcher, METH_O,
     "set_test_launcher(fn) -> address of a cuLaunchKernel stand-in that calls fn(function, grid,"
     " block, shared, stream, slots); None removes fn."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_callsite",
    .m_doc = "The cached @jit call of a one-kernel plan in C (see launch.direct).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__callsite(void)
{
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&s_storage, "_storage"}, {&s_node, "_node"}, {&s_op, "op"}, {&s_arg, "arg"},
        {&s_value, "value"}, {&s_shape, "shape"}, {&s_dtype, "dtype"}, {&s_strides, "strides"},
        {&s_memory, "memory"}, {&s_device_id, "device_id"}, {&s_stream, "stream"},
        {&s_ptr, "ptr"}, {&s_use_on, "use_on"}, {&s_function, "function"},
        {&s_device, "device"}, {&s_fast_math, "fast_math"}, {&s_trace, "trace"},
        {&s_buffer, "buffer"}, {&s_cpu, "cpu"}, {&s_compiled_calls, "compiled_calls"},
    };
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        *names[k].slot = PyUnicode_InternFromString(names[k].name);
        if (*names[k].slot == NULL)
            return NULL;
    }
    if (PyType_Ready(&SiteType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Site", (PyObject *)&SiteType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
