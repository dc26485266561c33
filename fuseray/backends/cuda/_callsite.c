/* fuseray.backends.cuda._callsite: the cached @jit call of a one-kernel plan, in C.

Stage: backend (CUDA), beside launch.py; an optional accelerator. Where it is not built,
launch.py's Python path runs every call, with the same results.

A ``Site`` is built in Python (``launch.direct``'s ``site``) for one exact call description:
each argument's kind (a fuseray array whose buffer holds a DeviceArray of this shape, dtype and
strides, or a Python scalar of this exact type), the binding's prepared state for those strides
(kernel program, launch dimensions, argument layout, constant arguments), and the Python
functions it leans on (current stream, the launch fallback). Calling it with a call's argument
tuple either

- returns None, having done nothing, when the call does not match (another shape, a lazy
  argument, tracing, the CPU selected, fast math toggled, ``config.compiled_calls`` off): the
  caller takes the Python path; or
- runs the call exactly as ``Binding.launch`` and ``@jit``'s wrapping would: declares every
  input used on the current stream, allocates the outputs there, packs the kernel's arguments
  into 8-byte slots, calls the driver's ``cuLaunchKernel`` through its address, and returns the
  result as a new fuseray array.

The objects it reads and makes (fuseray's ndarray, Node, Buffer, DeviceArray and DeviceMemory)
are read and written at their ``__slots__``' offsets, which ``bind`` takes from the classes once,
after checking that each class has exactly the slots this file knows: a slot added in Python
fails ``bind`` (and the tests) rather than being left unset here. The result's five objects are
those the Python path makes (``launch._empty``, ``jit._wrap_value``), slot for slot.

Small output blocks come from the memory pool's files as ``memory._allocate`` takes them, under
the pool's lock; ``bind`` also returns a C ``DeviceMemory.__del__`` that files a small block back
as ``memory._release`` does. Every other case (a first block of its size, a large block, a full
pool, no filed block) is handed to those Python functions. Pool updates here are single steps in
which no garbage collection can start (no container is allocated between a read and its write),
which is the rule ``memory._release`` states.

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
#ifndef Py_T_OBJECT_EX
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif

#ifndef Py_TPFLAGS_HAVE_VECTORCALL
#define Py_TPFLAGS_HAVE_VECTORCALL _Py_TPFLAGS_HAVE_VECTORCALL
#endif

#if PY_VERSION_HEX >= 0x030D0000
#define finalizing() Py_IsFinalizing()
#else
#define finalizing() _Py_IsFinalizing()
#endif

typedef int (*launch_fn)(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                         unsigned bz, unsigned shared, void *stream, void **params, void **extra);

#define MAX_SLOTS 256

/* Programmatic dependent launch (driver.Function.dependent): ``cuLaunchKernelEx`` with the one
   attribute that lets the grid start while the grid ahead of it in the stream finishes. The
   structures as cuda.h (CUDA 12 and 13) lays them out: CUlaunchAttribute is the attribute's id
   padded to 8 bytes and a 64-byte value; CUlaunchConfig the dimensions, the dynamic shared
   memory, the stream and the attribute list. */
typedef struct {
    unsigned int id; /* CUlaunchAttributeID */
    char pad[4];
    union {
        char bytes[64];
        int allowed; /* programmaticStreamSerializationAllowed */
    } value;
} launch_attribute;

typedef struct {
    unsigned int grid[3], block[3], shared;
    void *stream;
    launch_attribute *attrs;
    unsigned int count;
} launch_config;

typedef int (*launch_ex_fn)(const launch_config *config, void *f, void **params, void **extra);

#define PROGRAMMATIC_STREAM_SERIALIZATION 6 /* CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION */

static launch_ex_fn launch_ex = NULL; /* set by dependent_launcher, before any site uses it */

/* A launch_fn for a site whose kernel is a dependent launch: cuLaunchKernel's arguments, handed
   to cuLaunchKernelEx with programmatic stream serialisation allowed. */
static int
dependent_launch(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                 unsigned bz, unsigned shared, void *stream, void **params, void **extra)
{
    launch_attribute attribute;
    memset(&attribute, 0, sizeof attribute);
    attribute.id = PROGRAMMATIC_STREAM_SERIALIZATION;
    attribute.value.allowed = 1;
    launch_config config = {{gx, gy, gz}, {bx, by, bz}, shared, stream, &attribute, 1};
    return launch_ex(&config, f, params, extra);
}

/* names, interned once */
static PyObject *s_ptr, *s_use_on, *s_function, *s_device, *s_fast_math, *s_trace, *s_buffer,
    *s_cpu, *s_compiled_calls, *s_device_id, *s_stream, *s_acquire, *s_release, *s_allocate,
    *s_release_fn, *s_recycled, *s_recycled_bytes, *s_recycle_lock, *s_small_block,
    *s_recycle_limit, *s_serials, *s_empty_tuple;

/* ------------------------------------------------------------------------------- the classes */

/* Each class's slots, in the order of its enum; ``__weakref__`` comes on top of each. */
enum { ND_NODE, ND_STORAGE, ND_CHAIN, ND_BASE, ND_READONLY, ND_N };
static const char *const nd_names[] = {"_node", "_storage", "_chain", "_base", "_readonly"};
enum { NO_OP, NO_DTYPE, NO_SHAPE, NO_SRC, NO_ARG, NO_KEY, NO_DEPTH, NO_HASH, NO_VALUE, NO_N };
static const char *const no_names[] = {"op",   "dtype", "shape", "src",   "arg",
                                       "_key", "depth", "_hash", "_value"};
enum { BU_VALUE, BU_SERIAL, BU_SPEC, BU_N };
static const char *const bu_names[] = {"value", "serial", "spec"};
enum { DA_DTYPE, DA_CONTIGUOUS, DA_MEMORY, DA_PTR, DA_READONLY, DA_SHAPE, DA_STRIDES, DA_N };
static const char *const da_names[] = {"dtype",    "is_c_contiguous", "memory", "ptr",
                                       "readonly", "shape",           "strides"};
enum { DM_DEVICE_ID, DM_PTR, DM_SIZE, DM_STREAM, DM_N };
static const char *const dm_names[] = {"device_id", "ptr", "size", "stream"};

typedef struct {
    PyTypeObject *type; /* a strong reference, once bound */
    Py_ssize_t offset[16];
} Layout;

/* what bind() found; a Site cannot be made before */
static Layout ndarray_l, node_l, buffer_l, darray_l, dmem_l;
static PyObject *memory_ns; /* the memory module's namespace: the pool's state, read per call */
static PyObject *serials;   /* Buffer._serials */

#define SLOT(o, layout, k) (*(PyObject **)((char *)(o) + (layout).offset[k]))

/* Set a slot of an object made here (its slots start NULL); steals ``v``. */
static inline void
put(PyObject *o, Layout *layout, int k, PyObject *v)
{
    PyObject **p = (PyObject **)((char *)o + layout->offset[k]);
    PyObject *old = *p;
    *p = v;
    Py_XDECREF(old);
}

/* A new instance with every slot unset, as ``object.__new__`` makes it. */
static inline PyObject *
fresh(Layout *layout)
{
    return layout->type->tp_alloc(layout->type, 0);
}

/* Whether instances of ``t`` take weak references: a ``__weakref__`` slot is a list pointer at
   ``tp_weaklistoffset`` up to 3.11, and managed by the interpreter (a negative offset) from
   3.12. Either way ``tp_alloc`` lays it out. */
static int
has_weakref(PyTypeObject *t)
{
#ifdef Py_TPFLAGS_MANAGED_WEAKREF
    if (t->tp_flags & Py_TPFLAGS_MANAGED_WEAKREF)
        return 1;
#endif
    return t->tp_weaklistoffset > 0;
}

/* Check ``type`` against the slots this file knows and record their offsets. */
static int
layout_of(PyObject *type, const char *const *names, int n, Layout *out)
{
    if (!PyType_Check(type))
        return PyErr_Format(PyExc_TypeError, "bind: %R is not a class", type), -1;
    PyTypeObject *t = (PyTypeObject *)type;
    PyObject *slots = PyDict_GetItemString(t->tp_dict, "__slots__");
    int ok = (t->tp_flags & Py_TPFLAGS_HEAPTYPE) && t->tp_base == &PyBaseObject_Type &&
             t->tp_dictoffset == 0 && has_weakref(t) && t->tp_itemsize == 0 &&
             slots != NULL && PyTuple_Check(slots) && PyTuple_GET_SIZE(slots) == n + 1;
    for (int k = 0; ok && k < n; k++) {
        PyObject *d = PyDict_GetItemString(t->tp_dict, names[k]);
        ok = d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)d)->d_member->type == Py_T_OBJECT_EX &&
             !(((PyMemberDescrObject *)d)->d_member->flags & Py_READONLY);
        if (ok)
            out->offset[k] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    /* exactly these slots and __weakref__, in whatever order */
    for (Py_ssize_t i = 0; ok && i < n + 1; i++) {
        PyObject *name = PyTuple_GET_ITEM(slots, i);
        int known = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "__weakref__") == 0;
        for (int k = 0; !known && k < n; k++)
            known = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, names[k]) == 0;
        ok = known;
    }
    if (!ok)
        return PyErr_Format(PyExc_TypeError,
                            "bind: %R is not a plain class with exactly the __slots__ the C call "
                            "site knows (update _callsite.c with the class)",
                            type),
               -1;
    Py_XSETREF(out->type, (PyTypeObject *)Py_NewRef(type));
    return 0;
}

/* ------------------------------------------------------------------------------- the pool */

/* ``namespace[name]`` (a borrowed reference), or NULL with an error: ``missing`` where unset. */
static inline PyObject *
lookup(PyObject *namespace, PyObject *name, PyObject *missing)
{
    PyObject *v = PyDict_GetItemWithError(namespace, name);
    if (v == NULL && !PyErr_Occurred())
        PyErr_SetObject(missing, name);
    return v;
}

/* The memory module's global ``name``. */
static inline PyObject *
pool_global(PyObject *name)
{
    return lookup(memory_ns, name, PyExc_NameError);
}

static int
pool_lock(PyObject *lock, PyObject *method)
{
    PyObject *r = PyObject_VectorcallMethod(method, &lock, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* 1 when a block of ``size`` bytes is small enough to be filed, 0 when not, -1 on error. */
static int
is_small(Py_ssize_t size)
{
    PyObject *limit = pool_global(s_small_block);
    Py_ssize_t small = limit == NULL ? -1 : PyLong_AsSsize_t(limit);
    if (small == -1 && PyErr_Occurred())
        return -1;
    return size <= small;
}

/* ``_recycled_bytes[device_id] += delta``, in one step (no collection can start inside it). */
static int
count_filed(PyObject *device_id, Py_ssize_t delta)
{
    PyObject *bytes = pool_global(s_recycled_bytes);
    if (bytes == NULL)
        return -1;
    PyObject *now = PyDict_GetItemWithError(bytes, device_id);
    if (now == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, device_id);
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(now);
    if (n == -1 && PyErr_Occurred())
        return -1;
    PyObject *updated = PyLong_FromSsize_t(n + delta);
    if (updated == NULL)
        return -1;
    int r = PyDict_SetItem(bytes, device_id, updated);
    Py_DECREF(updated);
    return r;
}

/* The file of blocks of ``size`` bytes last used on ``stream`` (a new reference), or NULL, with
   an error set only on failure. */
static PyObject *
file_of(PyObject *stream, PyObject *size)
{
    PyObject *recycled = pool_global(s_recycled);
    if (recycled == NULL)
        return NULL;
    PyObject *id = PyLong_FromVoidPtr(stream);
    if (id == NULL)
        return NULL;
    PyObject *key = PyTuple_Pack(2, id, size);
    Py_DECREF(id);
    if (key == NULL)
        return NULL;
    PyObject *filed = PyDict_GetItemWithError(recycled, key);
    Py_DECREF(key);
    if (filed != NULL && !PyList_CheckExact(filed))
        return PyErr_SetString(PyExc_TypeError, "memory._recycled holds a non-list"), NULL;
    return Py_XNewRef(filed);
}

/* The pool's lock, taken (a new reference to it), or NULL with an error. */
static PyObject *
lock_pool(void)
{
    PyObject *lock = Py_XNewRef(pool_global(s_recycle_lock));
    if (lock != NULL && pool_lock(lock, s_acquire) < 0)
        Py_CLEAR(lock);
    return lock;
}

/* Release ``lock`` (from lock_pool) and drop it, keeping an error set before: -1 if the release
   itself failed, its error then replacing the earlier one. */
static int
unlock_pool(PyObject *lock)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
    int r = pool_lock(lock, s_release);
    if (r == 0)
        PyErr_SetRaisedException(exc);
    else
        Py_XDECREF(exc);
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    int r = pool_lock(lock, s_release);
    if (r == 0) {
        PyErr_Restore(t, v, tb);
    } else {
        Py_XDECREF(t);
        Py_XDECREF(v);
        Py_XDECREF(tb);
    }
#endif
    Py_DECREF(lock);
    return r;
}

/* A filed block of ``size`` bytes for ``stream`` (a new reference to its pointer), as
   ``memory._allocate``'s first branch takes it; NULL with no error when none is filed. */
static PyObject *
take_block(Py_ssize_t n, PyObject *size, PyObject *stream, PyObject *device_id)
{
    int small = is_small(n);
    if (small <= 0)
        return NULL;
    PyObject *filed = file_of(stream, size); /* held: another thread may unlink it meanwhile */
    if (filed == NULL || PyList_GET_SIZE(filed) == 0) {
        Py_XDECREF(filed);
        return NULL;
    }
    PyObject *lock = lock_pool(), *ptr = NULL;
    if (lock != NULL) {
        Py_ssize_t count = PyList_GET_SIZE(filed); /* ``_unfile`` empties what it unlinks */
        if (count > 0 && count_filed(device_id, -n) == 0) {
            ptr = Py_NewRef(PyList_GET_ITEM(filed, count - 1));
            if (PyList_SetSlice(filed, count - 1, count, NULL) < 0)
                Py_CLEAR(ptr);
        }
        if (unlock_pool(lock) < 0)
            Py_CLEAR(ptr);
    }
    Py_DECREF(filed);
    return ptr;
}

/* File a small block back as ``memory._release`` does, where its file exists and the pool has
   room: 1 when filed, 0 when ``_release`` must decide, -1 on error. As there, the file is
   looked up under the lock (the key's tuple may start a collection, whose nested releases then
   come before this one's reads), and the limit check is the only read ahead of a write. */
static int
file_block(PyObject *ptr, Py_ssize_t n, PyObject *size, PyObject *stream, PyObject *device_id)
{
    int small = is_small(n);
    if (small <= 0)
        return small;
    PyObject *lock = lock_pool();
    if (lock == NULL)
        return -1;
    int done = -1;
    PyObject *filed = file_of(stream, size), *bytes, *limit, *held;
    if (filed == NULL) {
        done = PyErr_Occurred() ? -1 : 0;
    } else if ((bytes = pool_global(s_recycled_bytes)) != NULL &&
               (limit = pool_global(s_recycle_limit)) != NULL) {
        held = PyDict_GetItemWithError(bytes, device_id);
        Py_ssize_t room = PyLong_AsSsize_t(limit), now = held ? PyLong_AsSsize_t(held) : 0;
        if (!PyErr_Occurred())
            done = held == NULL || now + n > room ? 0
                   : PyList_Append(filed, ptr) < 0 ? -1
                   : count_filed(device_id, n) < 0 ? -1 : 1;
    }
    Py_XDECREF(filed);
    if (unlock_pool(lock) < 0)
        done = -1;
    return done;
}

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

/* ------------------------------------------------------------------------------- the objects */

/* A DeviceMemory of ``size`` bytes (``n``) on ``stream``, as its constructor makes it: ``ptr`` is
   0 until the block is taken, so that a failed allocation frees nothing. */
static PyObject *
new_memory(Py_ssize_t n, PyObject *size, PyObject *stream, PyObject *device_id)
{
    PyObject *m = fresh(&dmem_l);
    if (m == NULL)
        return NULL;
    put(m, &dmem_l, DM_PTR, PyLong_FromLong(0));
    put(m, &dmem_l, DM_SIZE, Py_NewRef(size));
    put(m, &dmem_l, DM_DEVICE_ID, Py_NewRef(device_id));
    put(m, &dmem_l, DM_STREAM, Py_NewRef(stream));
    if (n == 0)
        return m;
    PyObject *ptr = take_block(n, size, stream, device_id);
    if (ptr == NULL && !PyErr_Occurred()) {
        PyObject *allocate = pool_global(s_allocate);
        PyObject *args[2] = {size, stream};
        ptr = allocate == NULL ? NULL : PyObject_Vectorcall(allocate, args, 2, NULL);
    }
    if (ptr == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    put(m, &dmem_l, DM_PTR, ptr);
    return m;
}

typedef struct {
    PyObject *shape, *dtype, *strides, *size;
    Py_ssize_t n;
} OutputSpec;

/* ``launch._empty``'s C-contiguous DeviceArray over a new DeviceMemory. */
static PyObject *
new_output(OutputSpec *o, PyObject *stream, PyObject *device_id)
{
    PyObject *m = new_memory(o->n, o->size, stream, device_id);
    if (m == NULL)
        return NULL;
    PyObject *a = fresh(&darray_l);
    if (a == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    put(a, &darray_l, DA_PTR, Py_NewRef(SLOT(m, dmem_l, DM_PTR)));
    put(a, &darray_l, DA_MEMORY, m);
    put(a, &darray_l, DA_SHAPE, Py_NewRef(o->shape));
    put(a, &darray_l, DA_STRIDES, Py_NewRef(o->strides));
    put(a, &darray_l, DA_DTYPE, Py_NewRef(o->dtype));
    put(a, &darray_l, DA_CONTIGUOUS, Py_NewRef(Py_True));
    put(a, &darray_l, DA_READONLY, Py_NewRef(Py_False));
    return a;
}

/* ``jit._wrap_value``: a fuseray array over a new buffer leaf holding ``value`` (a DeviceArray
   made by new_output). */
static PyObject *
wrap_output(PyObject *value)
{
    PyObject *serial = PyIter_Next(serials);
    if (serial == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "Buffer._serials ran out");
        return NULL;
    }
    /* held: the allocations below may run a collection, and with it any Python code */
    PyObject *shape = Py_NewRef(SLOT(value, darray_l, DA_SHAPE)),
             *dtype = Py_NewRef(SLOT(value, darray_l, DA_DTYPE));
    PyObject *buffer = fresh(&buffer_l), *node = NULL, *arg = NULL, *a = NULL;
    if (buffer == NULL)
        goto done;
    put(buffer, &buffer_l, BU_VALUE, Py_NewRef(value));
    put(buffer, &buffer_l, BU_SERIAL, Py_NewRef(serial));
    put(buffer, &buffer_l, BU_SPEC, Py_NewRef(Py_None));
    arg = PyTuple_Pack(2, buffer, shape);
    node = arg == NULL ? NULL : fresh(&node_l);
    if (node == NULL)
        goto done;
    put(node, &node_l, NO_OP, Py_NewRef(s_buffer));
    put(node, &node_l, NO_DTYPE, Py_NewRef(dtype));
    put(node, &node_l, NO_SHAPE, Py_NewRef(shape));
    put(node, &node_l, NO_SRC, Py_NewRef(s_empty_tuple));
    put(node, &node_l, NO_ARG, Py_NewRef(arg));
    put(node, &node_l, NO_KEY, Py_NewRef(Py_None));
    put(node, &node_l, NO_DEPTH, PyLong_FromLong(0));
    put(node, &node_l, NO_HASH, Py_NewRef(serial)); /* Node's hash of a buffer leaf: its serial */
    put(node, &node_l, NO_VALUE, Py_NewRef(Py_None));
    a = fresh(&ndarray_l);
    if (a == NULL)
        goto done;
    put(a, &ndarray_l, ND_NODE, Py_NewRef(node));
    put(a, &ndarray_l, ND_STORAGE, Py_NewRef(Py_None));
    put(a, &ndarray_l, ND_CHAIN, Py_NewRef(s_empty_tuple));
    put(a, &ndarray_l, ND_BASE, Py_NewRef(Py_None));
    put(a, &ndarray_l, ND_READONLY, Py_NewRef(Py_False));
done:
    Py_DECREF(shape);
    Py_DECREF(dtype);
    Py_DECREF(serial);
    Py_XDECREF(buffer);
    Py_XDECREF(arg);
    Py_XDECREF(node);
    return a;
}

/* DeviceMemory.__del__ in C (bind returns it): files a small block back here where
   ``memory._release`` would file it, and hands every other case to ``_release``. */
static PyObject *
memory_del(PyObject *self, PyObject *unused)
{
    PyObject *ptr = SLOT(self, dmem_l, DM_PTR), *size = SLOT(self, dmem_l, DM_SIZE),
             *stream = SLOT(self, dmem_l, DM_STREAM), *device_id = SLOT(self, dmem_l, DM_DEVICE_ID);
    if (ptr == NULL || size == NULL || stream == NULL || device_id == NULL)
        Py_RETURN_NONE; /* never constructed: nothing was allocated */
    int truth = PyObject_IsTrue(ptr);
    if (truth <= 0 || finalizing())
        return truth < 0 ? NULL : Py_NewRef(Py_None);
    Py_INCREF(ptr);
    Py_INCREF(size);
    Py_INCREF(stream);
    Py_INCREF(device_id);
    PyObject *r = NULL;
    Py_ssize_t n = PyLong_AsSsize_t(size);
    int filed = n == -1 && PyErr_Occurred() ? -1 : file_block(ptr, n, size, stream, device_id);
    if (filed == 1) {
        r = Py_NewRef(Py_None);
    } else if (filed == 0) {
        PyObject *release = pool_global(s_release_fn);
        PyObject *args[3] = {ptr, size, stream};
        r = release == NULL ? NULL : PyObject_Vectorcall(release, args, 3, NULL);
    }
    Py_DECREF(ptr);
    Py_DECREF(size);
    Py_DECREF(stream);
    Py_DECREF(device_id);
    return r;
}

static PyMethodDef memory_del_def = {
    "__del__", (PyCFunction)memory_del, METH_NOARGS,
    "Free (or file for reuse) the block in its last-use stream's order (C, from _callsite)."};

/* ------------------------------------------------------------------------------- the call */

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
    Py_ssize_t arg;
    PyObject *convert; /* the parameter's NumPy scalar type */
} ParamSpec;

/* the Python objects a site leans on, in the order of the constructor's ``env`` (whose last
   entry, the launch address, is not an object and is kept apart) */
enum { ENV_GET_STREAM, ENV_CONFIG, ENV_FAST_MATH, ENV_TRACE_STATE, ENV_FALLBACK, ENV_DEVICE_ID,
       ENV_COUNT };

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

/* ``o.ptr`` (a device address, a stream or function handle) into ``*address``; -1 with an
   exception set where it has none or it is not an unsigned integer. */
static int
read_ptr(PyObject *o, uint64_t *address)
{
    PyObject *p = PyObject_GetAttr(o, s_ptr);
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

/* The DeviceArray behind fuseray array ``a`` if it matches ``spec`` (new reference); NULL when
   it does not, with an error set only where a comparison failed. */
static PyObject *
array_value(PyObject *a, ArgSpec *spec)
{
    /* borrowed reads down the chain: nothing runs between them that could replace a slot */
    if (Py_TYPE(a) != ndarray_l.type || SLOT(a, ndarray_l, ND_STORAGE) != Py_None)
        return NULL; /* a view of a written storage: node_of brings it up to date, in Python */
    PyObject *node = SLOT(a, ndarray_l, ND_NODE);
    if (node == NULL || Py_TYPE(node) != node_l.type)
        return NULL;
    PyObject *op = SLOT(node, node_l, NO_OP), *arg = SLOT(node, node_l, NO_ARG);
    if (op != s_buffer && (op == NULL || !PyUnicode_Check(op) || PyUnicode_Compare(op, s_buffer)))
        return NULL;
    if (arg == NULL || !PyTuple_Check(arg) || PyTuple_GET_SIZE(arg) < 1)
        return NULL;
    PyObject *buffer = PyTuple_GET_ITEM(arg, 0);
    if (Py_TYPE(buffer) != buffer_l.type)
        return NULL;
    PyObject *v = SLOT(buffer, buffer_l, BU_VALUE);
    if (v == NULL || Py_TYPE(v) != darray_l.type)
        return NULL;
    Py_INCREF(v);
    int keys[3] = {DA_SHAPE, DA_DTYPE, DA_STRIDES};
    PyObject *want[3] = {spec->shape, spec->dtype, spec->strides};
    for (int k = 0; k < 3; k++) {
        PyObject *x = Py_XNewRef(SLOT(v, darray_l, keys[k]));
        int eq = x == NULL ? 0 : same(x, want[k]);
        Py_XDECREF(x);
        if (eq != 1) {
            Py_DECREF(v);
            return NULL;
        }
    }
    return v;
}

/* A setting of ``config`` (read from its namespace). */
static inline PyObject *
setting(Site *self, PyObject *name)
{
    return lookup(self->env[ENV_CONFIG], name, PyExc_AttributeError);
}

/* -1 on error, 0 when the call is not this site's, 1 to go on. */
static int
call_matches(Site *self)
{
    PyObject *device = setting(self, s_device);
    if (device == NULL)
        return -1;
    if (PyUnicode_Check(device) && PyUnicode_Compare(device, s_cpu) == 0)
        return 0;
    PyObject *on = setting(self, s_compiled_calls);
    int compiled = on == NULL ? -1 : PyObject_IsTrue(on);
    if (compiled <= 0)
        return compiled;
    PyObject *fast = Py_XNewRef(setting(self, s_fast_math));
    if (fast == NULL)
        return -1;
    int eq = same(fast, self->env[ENV_FAST_MATH]);
    Py_DECREF(fast);
    if (eq != 1)
        return eq;
    PyObject *trace = PyObject_GetAttr(self->env[ENV_TRACE_STATE], s_trace);
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

/* Order input ``v`` (a DeviceArray) on ``stream`` and read its pointer into ``*slot``. */
static int
use_input(Site *self, PyObject *v, PyObject *stream, uint64_t *slot)
{
    PyObject *memory = Py_XNewRef(SLOT(v, darray_l, DA_MEMORY)), *dev = NULL, *last = NULL;
    if (memory == NULL)
        return PyErr_SetString(PyExc_AttributeError, "a DeviceArray without memory"), -1;
    if (Py_TYPE(memory) == dmem_l.type) {
        dev = Py_XNewRef(SLOT(memory, dmem_l, DM_DEVICE_ID));
        last = Py_XNewRef(SLOT(memory, dmem_l, DM_STREAM));
        if (dev == NULL || last == NULL)
            PyErr_SetString(PyExc_AttributeError, "a DeviceMemory not constructed");
    } else { /* ForeignMemory */
        dev = PyObject_GetAttr(memory, s_device_id);
        last = dev == NULL ? NULL : PyObject_GetAttr(memory, s_stream);
    }
    Py_DECREF(memory);
    int r = -1, same_device = dev == NULL || last == NULL ? -1 : same(dev, self->env[ENV_DEVICE_ID]);
    if (same_device == 0)
        PyErr_Format(PyExc_ValueError,
                     "an input lives on CUDA device %R, but the current device is %R", dev,
                     self->env[ENV_DEVICE_ID]);
    if (same_device == 1) {
        PyObject *ordered = last == stream ? Py_NewRef(Py_None)
                                           : PyObject_CallMethodOneArg(v, s_use_on, stream);
        Py_XDECREF(ordered);
        PyObject *ptr = ordered == NULL ? NULL : Py_XNewRef(SLOT(v, darray_l, DA_PTR));
        if (ptr != NULL) {
            *slot = PyLong_AsUnsignedLongLong(ptr);
            r = *slot == (uint64_t)-1 && PyErr_Occurred() ? -1 : 0;
            Py_DECREF(ptr);
        } else if (ordered != NULL) {
            PyErr_SetString(PyExc_AttributeError, "a DeviceArray without ptr");
        }
    }
    Py_XDECREF(dev);
    Py_XDECREF(last);
    return r;
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
        values[i] = array_value(a, spec);
        if (values[i] == NULL) {
            if (PyErr_Occurred()) /* a comparison failed: let the Python path report it */
                PyErr_Clear();
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
        if (use_input(self, in->arg < 0 ? in->captured : values[in->arg], stream, &slots[s]) < 0)
            goto fail;
        slots[s] += in->shift;
    }
    for (Py_ssize_t k = 0; k < self->noutputs; k++, s++) {
        PyObject *out = new_output(&self->outputs[k], stream, self->env[ENV_DEVICE_ID]);
        if (out == NULL)
            goto fail;
        held[nheld++] = out;
        slots[s] = PyLong_AsUnsignedLongLong(SLOT(out, darray_l, DA_PTR));
        if (slots[s] == (uint64_t)-1 && PyErr_Occurred())
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

    PyObject *function = PyObject_GetAttr(self->program, s_function); /* a tier upgrade may replace it */
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
    result = wrap_output(picked);

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
        Py_XDECREF(self->outputs[i].size);
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
   outputs: per output, ``(shape, dtype, strides, size)``: its C-contiguous layout and the
            size of its block (``memory.block_size`` of its bytes)
   tail:    the constant arguments after the output pointers
   params:  per jit parameter, ``(argument index, NumPy scalar type)``
   codes:   bytes, one struct code per kernel argument
   program: read for ``.function.ptr`` on every call
   dims:    ``(gx, gy, gz, bx, by, bz, shared)``
   pick:    which output the call returns
   env:     ``(get_stream, vars(config), fast_math, trace_state, fallback, device id, launch
            address)``

   ``bind`` must have run first. */
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
    if (dmem_l.type == NULL)
        return bad("bind() the classes first");
    if (self->vectorcall != site_not_ready) /* a call under way may be reading its specs */
        return bad("a Site is initialised once");
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
    if (PyTuple_GET_SIZE(dims) != 7 || PyTuple_GET_SIZE(env) != ENV_COUNT + 1)
        return bad("dims takes 7 values, env takes 7");
    if (!PyDict_Check(PyTuple_GET_ITEM(env, ENV_CONFIG)))
        return bad("env's config is a namespace dict");

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
            return bad("an output is (shape, dtype, strides, size)");
        self->outputs[i].shape = Py_NewRef(PyTuple_GET_ITEM(x, 0));
        self->outputs[i].dtype = Py_NewRef(PyTuple_GET_ITEM(x, 1));
        self->outputs[i].strides = Py_NewRef(PyTuple_GET_ITEM(x, 2));
        self->outputs[i].size = Py_NewRef(PyTuple_GET_ITEM(x, 3));
        self->outputs[i].n = PyLong_AsSsize_t(self->outputs[i].size);
        if (self->outputs[i].n == -1 && PyErr_Occurred())
            return -1;
        if (self->outputs[i].n < 0)
            return bad("an output's size is negative");
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
    void *address = PyLong_AsVoidPtr(PyTuple_GET_ITEM(env, ENV_COUNT));
    if (address == NULL)
        return PyErr_Occurred() ? -1 : bad("no launch address");
    self->launch = (launch_fn)address;
    for (int k = 0; k < ENV_COUNT; k++)
        self->env[k] = Py_NewRef(PyTuple_GET_ITEM(env, k));
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

/* ------------------------------------------------------------------------------- binding */

/* bind(ndarray, Node, Buffer, DeviceArray, DeviceMemory, memory_namespace) -> DeviceMemory.__del__

   Records the five classes' slot offsets (each class is checked: see layout_of) and the memory
   module's namespace, whose pool state (``_recycled``, ``_recycled_bytes``, ``_recycle_lock``,
   ``_SMALL_BLOCK``, ``_RECYCLE_LIMIT``, ``_allocate``, ``_release``) is read on every use, so
   that it may be replaced (tests do). Returns the C ``__del__`` for DeviceMemory, a method
   descriptor the caller installs on the class. Sites made before a second bind keep working:
   the classes must be the same ones. */
static PyObject *
bind(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyDict_Check(argv[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "bind(ndarray, Node, Buffer, DeviceArray, DeviceMemory, namespace)");
        return NULL;
    }
    Layout *layouts[5] = {&ndarray_l, &node_l, &buffer_l, &darray_l, &dmem_l};
    Layout found[5] = {{0}};
    const char *const *names[5] = {nd_names, no_names, bu_names, da_names, dm_names};
    int counts[5] = {ND_N, NO_N, BU_N, DA_N, DM_N};
    PyObject *count = NULL;
    for (int k = 0; k < 5; k++)
        if (layout_of(argv[k], names[k], counts[k], &found[k]) < 0)
            goto fail;
    for (int k = 0; k < 5; k++)
        if (layouts[k]->type != NULL && (PyObject *)layouts[k]->type != argv[k]) {
            /* sites and DeviceMemory.__del__ read the bound classes' offsets */
            PyErr_SetString(PyExc_ValueError, "bind: other classes were bound already");
            goto fail;
        }
    count = PyObject_GetAttr(argv[2], s_serials);
    if (count == NULL)
        goto fail;
    if (!PyIter_Check(count)) {
        PyErr_SetString(PyExc_TypeError, "bind: Buffer._serials is not an iterator");
        goto fail;
    }
    PyObject *del = PyDescr_NewMethod(found[4].type, &memory_del_def);
    if (del == NULL)
        goto fail;
    for (int k = 0; k < 5; k++) {
        Py_XDECREF(layouts[k]->type);
        *layouts[k] = found[k];
    }
    Py_XSETREF(serials, count);
    Py_XSETREF(memory_ns, Py_NewRef(argv[5]));
    return del;
fail:
    for (int k = 0; k < 5; k++)
        Py_XDECREF(found[k].type);
    Py_XDECREF(count);
    return NULL;
}

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
    if (slots == NULL) {
        PyErr_WriteUnraisable(test_launcher); /* a status, not an exception, goes back */
        return 999;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        uint64_t v;
        memcpy(&v, params[k], 8);
        PyObject *x = PyLong_FromUnsignedLongLong(v);
        if (x == NULL) {
            PyErr_WriteUnraisable(test_launcher);
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

/* A stand-in for cuLaunchKernelEx: records the attributes of the last launch (``id`` and the
   value's first int, for ``last_test_attributes``) and hands the launch to ``test_launch``. */
static PyObject *test_attributes = NULL;

static int
test_launch_ex(const launch_config *config, void *f, void **params, void **extra)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *seen = PyList_New(0);
    for (unsigned k = 0; seen != NULL && k < config->count; k++) {
        PyObject *pair = Py_BuildValue("(Ii)", config->attrs[k].id, config->attrs[k].value.allowed);
        if (pair == NULL || PyList_Append(seen, pair) < 0)
            Py_CLEAR(seen);
        Py_XDECREF(pair);
    }
    if (seen == NULL)
        PyErr_WriteUnraisable(Py_None);
    Py_XSETREF(test_attributes, seen);
    PyGILState_Release(gil);
    return test_launch(f, config->grid[0], config->grid[1], config->grid[2], config->block[0],
                       config->block[1], config->block[2], config->shared, config->stream, params,
                       extra);
}

static PyObject *
last_test_attributes(PyObject *module, PyObject *unused)
{
    return Py_NewRef(test_attributes != NULL ? test_attributes : Py_None);
}

static PyObject *
test_launch_ex_address(PyObject *module, PyObject *unused)
{
    return PyLong_FromVoidPtr((void *)(uintptr_t)test_launch_ex);
}

/* dependent_launcher(address of cuLaunchKernelEx) -> the address of a launch_fn for sites of
   dependent kernels; the driver's function is kept for every such site of the process. */
static PyObject *
dependent_launcher(PyObject *module, PyObject *address)
{
    void *p = PyLong_AsVoidPtr(address);
    if (p == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "no cuLaunchKernelEx address");
        return NULL;
    }
    launch_ex = (launch_ex_fn)p;
    return PyLong_FromVoidPtr((void *)(uintptr_t)dependent_launch);
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
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(ndarray, Node, Buffer, DeviceArray, DeviceMemory, memory namespace) -> the C"
     " DeviceMemory.__del__ (see the module docstring)."},
    {"dependent_launcher", dependent_launcher, METH_O,
     "dependent_launcher(address of cuLaunchKernelEx) -> address of a cuLaunchKernel-like"
     " launch for sites of dependent kernels (programmatic stream serialisation allowed)."},
    {"test_launch_ex_address", test_launch_ex_address, METH_NOARGS,
     "-> address of a cuLaunchKernelEx stand-in that records its attributes and launches"
     " through the test launcher."},
    {"last_test_attributes", last_test_attributes, METH_NOARGS,
     "-> [(attribute id, value)] of the stand-in's last launch, or None."},
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
        {&s_ptr, "ptr"}, {&s_use_on, "use_on"}, {&s_function, "function"},
        {&s_device, "device"}, {&s_fast_math, "fast_math"}, {&s_trace, "trace"},
        {&s_buffer, "buffer"}, {&s_cpu, "cpu"}, {&s_compiled_calls, "compiled_calls"},
        {&s_device_id, "device_id"}, {&s_stream, "stream"}, {&s_acquire, "acquire"},
        {&s_release, "release"}, {&s_allocate, "_allocate"}, {&s_release_fn, "_release"},
        {&s_recycled, "_recycled"}, {&s_recycled_bytes, "_recycled_bytes"},
        {&s_recycle_lock, "_recycle_lock"}, {&s_small_block, "_SMALL_BLOCK"},
        {&s_recycle_limit, "_RECYCLE_LIMIT"}, {&s_serials, "_serials"},
    };
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        *names[k].slot = PyUnicode_InternFromString(names[k].name);
        if (*names[k].slot == NULL)
            return NULL;
    }
    s_empty_tuple = PyTuple_New(0);
    if (s_empty_tuple == NULL)
        return NULL;
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
