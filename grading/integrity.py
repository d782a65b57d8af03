"""Integrity: does a submission reach course_lib's reference of the very function it should write?

Notebooks import the course's library (``course_lib``), whose functions are the tested reference
implementations of many exercises: ``count_transitions`` in notebook 04 is ``transition_counts``,
``build_matrix`` in 01 is ``prep.interaction_matrix``. An answer that calls the reference passes
the tests without implementing anything. The grader flags such a submission for review (it never
changes a score), in two independent ways:

* **Statically** (:func:`static_flags`), over every cell the student wrote (answers and their own
  cells), with the course's cells in between: names are followed through imports (``from
  course_lib.models.markov import transition_counts``, ``import course_lib.prep as pp``,
  ``importlib.import_module("course_lib.prep")``, ``__import__``), aliases (``tc =
  transition_counts``, ``f = markov.transition_counts``, containers, ``functools.partial``),
  attributes of any module object (``cl.models.markov.transition_counts``), ``getattr`` with a
  string constant or one built from constants (``"transition" + "_counts"``, f-strings,
  ``"".join``), ``vars(m)[...]``, ``m.__dict__[...]`` and ``sys.modules[...]``. Functions the
  student defined are followed too: a helper that mentions the reference counts for every answer
  that calls it.
* **Dynamically**, in the grading run (``verdict_main.py``, the fresh process that decides the
  points): every reference function is wrapped before any cell runs; a call whose calling frame is
  code the student wrote is reported, with the student's frames on the stack. This catches what
  no static reading can (a name built at run time). Unwrapping or replacing a wrapper is itself
  flagged (and undone).

What counts as "the reference" of an exercise (:func:`exercise_references`): the course_lib
functions (and methods) its tests compare the answer with, the course_lib functions with the
same name as the answer's function, and the entries of :data:`EXTRA_REFERENCES` for exercises
whose tests use literal values only. Whatever the instructor's own solution of that exercise
uses is an allowed helper (``prep.pad_sequences`` in notebook 07, ``lab.cloze_mask`` inside
09's ``train_epoch``) and never flagged.

Targets are strings: ``"course_lib.models.markov:transition_counts"`` (module, then qualified
name), ``"course_lib.prep"`` (a module), ``"nb:<name>"`` (a function defined in one of the
notebook's own cells).
"""
from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

COURSE = "course_lib"

# Exercises whose tests compare with literal values only: the course_lib function (or the
# notebook's own function, "nb:<name>") that computes the same thing. Keyed by notebook, then by
# the answer cell's grade_id. Same-named functions are found without a table.
EXTRA_REFERENCES: dict[str, dict[str, list[str]]] = {
    "01_interaction_matrix": {
        "build_matrix": ["course_lib.prep:interaction_matrix"],
        "matrix_density": ["course_lib.prep:density"],
    },
    "02_neighbours_content": {
        "sparse_cosine": ["course_lib.models.knn:cosine_similarity"],
    },
    "07_bert4rec": {
        "inference_input": ["course_lib.models.bert4rec:mask_appended_inputs",
                            "course_lib.models.bert4rec:BERT4Rec._padded", "course_lib.models.sasrec:SASRec._padded"],
    },
    "09_lab": {
        "ex_embed": ["course_lib.exercises.lab09:embed_sequence"],
        "ex_mask_bidir": ["course_lib.models.sasrec:padding_attention_mask"],
        "ex_block": ["course_lib.models.sasrec:TransformerBlock", "course_lib.models.sasrec:TransformerBlock.forward"],
        "ex_train": ["course_lib.exercises.lab09:train_masked_epoch"],
        "ex_ndcg": ["course_lib.exercises.lab09:ndcg_from_scores"],
        # build_and_train must train with the student's own train_epoch: the reference epoch and the
        # library's trainer (which trains LabBERT4Rec, and so MyBERT4Rec, through its loss) would skip it
        "ex_together": ["course_lib.exercises.lab09:train_masked_epoch", "course_lib.train:train"],
    },
}

# Course functions a test compares with that are building blocks the prose lets the answer use,
# not the reference of the function asked for (keyed like EXTRA_REFERENCES).
ALLOWED_HELPERS: dict[str, dict[str, list[str]]] = {
    "02_neighbours_content": {
        # the hidden test builds the history's one-hot row with it; the reference is topk_prune
        "knn_scores": ["course_lib.models.knn:history_matrix"],
    },
    "09_lab": {
        # step 3 of the exercise: the masked loss; the reference of train_epoch is train_masked_epoch
        "ex_train": ["course_lib.exercises.lab09:masked_cross_entropy"],
    },
}

# cell roles of a rebuilt notebook (assignment.rebuild)
STUDENT_ROLES = ("answer", "student", "stub")
COURSE_ROLES = ("plain", "locked")

# calls whose arguments a test compares
COMPARE_FUNCS = {"allclose", "array_equal", "array_equiv", "isclose", "equal", "assert_allclose", "assert_array_equal",
                 "assert_array_almost_equal", "assert_almost_equal", "assert_equal", "assert_frame_equal",
                 "assert_series_equal", "assert_index_equal", "assert_close"}
# methods and functions that keep "what a value is made of" (x.tolist(), np.asarray(x), abs(x - y))
PASSTHROUGH_METHODS = {"tolist", "toarray", "todense", "cpu", "numpy", "item", "copy", "astype", "detach", "float",
                       "double", "int", "long", "to", "squeeze", "ravel", "flatten", "round", "clone", "contiguous",
                       "view", "reshape", "sort_index", "reset_index", "sort_values", "get"}
PASSTHROUGH_FUNCS = {"abs", "float", "int", "list", "tuple", "set", "sorted", "str", "round", "asarray", "array",
                     "as_tensor", "tensor", "from_numpy", "bool", "frozenset", "dict"}
SAFE_STR_METHODS = {"replace", "lower", "upper", "strip", "lstrip", "rstrip", "title", "capitalize", "casefold",
                    "swapcase", "removeprefix", "removesuffix", "format", "zfill", "center", "ljust", "rjust"}
BUILTIN_HOOKS = ("getattr", "vars", "globals", "locals", "__import__", "setattr")


# --------------------------------------------------------------------------- the course library, read statically

@dataclass
class _Module:
    name: str
    path: Path
    package: bool
    defs: dict = field(default_factory=dict)       # name -> "function" | "class"
    classes: dict = field(default_factory=dict)    # name -> (set of attribute names, [base expressions])
    methods: dict = field(default_factory=dict)    # class name -> {attr: "function" | "attr"}
    imports: dict = field(default_factory=dict)    # local name -> ("module", dotted) | ("from", dotted, name)
    assigns: dict = field(default_factory=dict)    # name -> value expression


class CourseIndex:
    """course_lib's modules, functions, classes and re-exports, read from its source files (the
    grader never imports course_lib, which would import torch)."""

    def __init__(self, root: Path | None):
        self.root = root
        self._mods: dict[str, _Module | None] = {}
        self._all: list[str] | None = None

    # modules
    def module(self, dotted: str) -> _Module | None:
        if dotted in self._mods:
            return self._mods[dotted]
        m = None
        if self.root is not None and (dotted == COURSE or dotted.startswith(COURSE + ".")):
            rel = dotted.split(".")[1:]
            base = self.root.joinpath(*rel) if rel else self.root
            for path, pkg in ((base / "__init__.py", True), (base.with_suffix(".py") if rel else None, False)):
                if path is not None and path.is_file():
                    m = self._read(dotted, path, pkg)
                    break
        self._mods[dotted] = m
        return m

    def _read(self, dotted: str, path: Path, package: bool) -> _Module:
        m = _Module(dotted, path, package)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            return m
        pkg = dotted if package else dotted.rpartition(".")[0]
        for node in tree.body:
            for n in ([node] if not isinstance(node, (ast.If, ast.Try)) else
                      [x for x in ast.walk(node) if isinstance(x, (ast.Import, ast.ImportFrom))]):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    m.defs[n.name] = "function"
                elif isinstance(n, ast.ClassDef):
                    m.defs[n.name] = "class"
                    attrs = {}
                    for b in n.body:
                        if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            attrs[b.name] = "function"
                        elif isinstance(b, (ast.Assign, ast.AnnAssign)):
                            for t in (b.targets if isinstance(b, ast.Assign) else [b.target]):
                                if isinstance(t, ast.Name):
                                    attrs[t.id] = "attr"
                    m.methods[n.name] = attrs
                    m.classes[n.name] = (set(attrs), list(n.bases))
                elif isinstance(n, ast.Import):
                    for a in n.names:
                        if a.asname:
                            m.imports[a.asname] = ("module", a.name)
                        else:
                            m.imports[a.name.split(".")[0]] = ("module", a.name.split(".")[0])
                elif isinstance(n, ast.ImportFrom):
                    if n.level:
                        parts = pkg.split(".")
                        up = parts[: len(parts) - (n.level - 1)] if n.level > 1 else parts
                        src = ".".join(up + ([n.module] if n.module else []))
                    else:
                        src = n.module or ""
                    for a in n.names:
                        if a.name != "*":
                            m.imports[a.asname or a.name] = ("from", src, a.name)
                elif isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                    m.assigns[n.targets[0].id] = n.value
        return m

    def all_modules(self) -> list[str]:
        if self._all is None:
            out = []
            if self.root is not None and self.root.is_dir():
                for p in sorted(self.root.rglob("*.py")):
                    rel = p.relative_to(self.root).with_suffix("").parts
                    if "__pycache__" in rel:
                        continue
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    out.append(".".join((COURSE,) + rel))
            self._all = out
        return self._all

    def functions_named(self, name: str) -> list[str]:
        """Every course_lib module-level function called ``name`` (where it is defined)."""
        return [f"{mod}:{name}" for mod in self.all_modules()
                if (m := self.module(mod)) is not None and m.defs.get(name) == "function"]

    # targets
    def member(self, target: str, attr: str, depth: int = 0) -> str | None:
        """The target reached by ``<target>.<attr>`` (None when it is not course_lib's)."""
        if depth > 12 or not attr:
            return None
        if target.startswith("inst:"):
            t = self.member(target[5:], attr, depth + 1)
            return t if t and self.kind(t) in ("method", "unknown") else None
        if ":" not in target:  # a module
            if not (target == COURSE or target.startswith(COURSE + ".")):
                return None
            return self._module_attr(target, attr, depth)
        mod, _, qual = target.partition(":")
        if self.kind(target) != "class":
            return None
        m = self.module(mod)
        cls = qual.split(".")[-1]
        if m is None or "." in qual or cls not in m.classes:
            return None
        attrs, bases = m.classes[cls]
        if attr in attrs:
            return f"{mod}:{qual}.{attr}"
        for b in bases:
            bt = self._expr_in_module(mod, b, depth + 1)
            if bt and self.kind(bt) == "class":
                r = self.member(bt, attr, depth + 1)
                if r:
                    return r
        return f"{mod}:{qual}.{attr}"

    def _module_attr(self, mod: str, attr: str, depth: int) -> str | None:
        m = self.module(mod)
        if m is None:
            return f"{mod}:{attr}"
        if attr in m.defs:
            return f"{mod}:{attr}"
        if attr in m.imports:
            imp = m.imports[attr]
            if imp[0] == "module":
                return imp[1] if imp[1].startswith(COURSE) else None
            src, name = imp[1], imp[2]
            if not src.startswith(COURSE):
                return None
            if self.module(f"{src}.{name}") is not None:
                return f"{src}.{name}"
            return self._module_attr(src, name, depth + 1)
        if m.package and self.module(f"{mod}.{attr}") is not None:
            return f"{mod}.{attr}"
        if attr in m.assigns:
            r = self._expr_in_module(mod, m.assigns[attr], depth + 1)
            if r:
                return r
        return f"{mod}:{attr}"

    def _expr_in_module(self, mod: str, node, depth: int) -> str | None:
        if depth > 12:
            return None
        if isinstance(node, ast.Name):
            m = self.module(mod)
            if m is None or node.id == "":
                return None
            if node.id in m.defs or node.id in m.imports:
                return self._module_attr(mod, node.id, depth + 1)
            return None
        if isinstance(node, ast.Attribute):
            base = self._expr_in_module(mod, node.value, depth + 1)
            return self.member(base, node.attr, depth + 1) if base else None
        return None

    def kind(self, target: str) -> str:
        """module | function | class | method | attr | notebook | unknown"""
        if target.startswith("nb:"):
            return "notebook"
        if target.startswith("inst:"):
            return "instance"
        if ":" not in target:
            return "module"
        mod, _, qual = target.partition(":")
        m = self.module(mod)
        if m is None:
            return "unknown"
        parts = qual.split(".")
        if len(parts) == 1:
            k = m.defs.get(parts[0])
            return k or ("attr" if parts[0] in m.assigns else "unknown")
        if len(parts) == 2 and parts[0] in m.methods:
            k = m.methods[parts[0]].get(parts[1])
            return "method" if k == "function" else ("attr" if k else "unknown")
        return "unknown"


_INDEX: dict = {}


def course_index() -> CourseIndex:
    """The index of the course_lib this Python would import (cached per process)."""
    try:
        spec = importlib.util.find_spec(COURSE)
        locs = list(spec.submodule_search_locations or []) if spec else []
    except (ImportError, ValueError):
        locs = []
    root = Path(locs[0]) if locs else (Path(__file__).resolve().parent.parent / COURSE)
    key = str(root)
    if key not in _INDEX:
        _INDEX[key] = CourseIndex(root if root.is_dir() else None)
    return _INDEX[key]


def is_course(target: str) -> bool:
    return target == COURSE or target.startswith((COURSE + ".", COURSE + ":", "nb:"))


def show(target: str) -> str:
    """``course_lib.models.markov.transition_counts`` (or ``<name> (defined in the notebook)`` for ``nb:<name>``)."""
    if target.startswith("nb:"):
        return f"{target[3:]} (defined in the notebook)"
    return target.replace(":", ".")


def owner(target: str) -> str:
    return "the notebook's" if target.startswith("nb:") else "course_lib's"


def short(target: str) -> str:
    return target.rpartition(":")[2] if ":" in target else target.rpartition(".")[2]


# --------------------------------------------------------------------------- reading notebook code

def parse(source: str):
    """The cell's code as Python (magics and shell lines become ``pass``), or None."""
    lines = [(ln[: len(ln) - len(ln.lstrip())] + "pass" if ln.lstrip().startswith(("%", "!")) else ln)
             for ln in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


class Resolver:
    """What names and expressions of notebook code refer to, as targets (see the module's docstring).

    Names are looked up through a ``lookup(name) -> set of targets`` function; string values are
    kept as ``"str:<value>"`` so that ``getattr(m, name)`` with ``name = "tran" + "sition_counts"``
    resolves."""

    def __init__(self, index: CourseIndex):
        self.idx = index

    # ---- expressions
    def resolve(self, node, lookup, depth: int = 0) -> set:
        if node is None or depth > 40:
            return set()
        R = lambda n: self.resolve(n, lookup, depth + 1)  # noqa: E731
        if isinstance(node, ast.Constant):
            return {"str:" + node.value} if isinstance(node.value, str) and len(node.value) < 400 else set()
        if isinstance(node, ast.Name):
            return set(lookup(node.id))
        if isinstance(node, ast.Attribute):
            out = set()
            for t in R(node.value):
                if t.startswith("str:"):
                    continue
                if node.attr == "__dict__":
                    out.add("dict:" + t)
                elif t.startswith("py:"):
                    out.add(t + (":" if t.count(":") == 1 else ".") + node.attr)
                else:
                    r = self.idx.member(t, node.attr) if not t.startswith(("nb:", "fn:", "dict:")) else None
                    if r:
                        out.add(r)
            return out
        if isinstance(node, ast.Subscript):
            out = set()
            keys = None
            for t in R(node.value):
                if t.startswith("dict:") or t == "py:sys:modules":
                    if keys is None:
                        keys = {k[4:] for k in R(node.slice) if k.startswith("str:")}
                    for k in keys:
                        out |= self._lookup_key(t, k, lookup)
                elif t.startswith("str:"):
                    s = self._fold_subscript(t[4:], node.slice)
                    if s is not None:
                        out.add("str:" + s)
                    elif not isinstance(node.slice, ast.Slice):
                        out.add(t)  # names[0]: an element of a container of strings
                else:
                    out.add(t)  # containers: an element may be any of what was put in
            return out
        if isinstance(node, ast.Call):
            return self._call(node, lookup, depth)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*[R(e) for e in node.elts]) if node.elts else set()
        if isinstance(node, ast.Dict):
            vals = [R(v) for v in node.values if v is not None]
            return set().union(*vals) if vals else set()
        if isinstance(node, ast.Starred):
            return R(node.value)
        if isinstance(node, ast.IfExp):
            return R(node.body) | R(node.orelse)
        if isinstance(node, ast.BoolOp):
            return set().union(*[R(v) for v in node.values])
        if isinstance(node, ast.NamedExpr):
            return R(node.value)
        if isinstance(node, ast.BinOp):
            left, right = R(node.left), R(node.right)
            ls = [t[4:] for t in left if t.startswith("str:")]
            rs = [t[4:] for t in right if t.startswith("str:")]
            if isinstance(node.op, ast.Add) and ls and rs and len(ls) * len(rs) <= 16:
                return {"str:" + a + b for a in ls for b in rs if len(a + b) < 400}
            if isinstance(node.op, ast.Mod) and ls:
                try:
                    args = _const_tuple(node.right, R)
                    return {"str:" + (a % args) for a in ls} if args is not None else set()
                except (TypeError, ValueError):
                    return set()
            return set()
        if isinstance(node, ast.JoinedStr):
            parts = [""]
            for v in node.values:
                if isinstance(v, ast.Constant):
                    parts = [p + str(v.value) for p in parts]
                elif isinstance(v, ast.FormattedValue) and v.conversion == -1 and v.format_spec is None:
                    opts = [t[4:] for t in R(v.value) if t.startswith("str:")]
                    if not opts or len(parts) * len(opts) > 16:
                        return set()
                    parts = [p + o for p in parts for o in opts]
                else:
                    return set()
            return {"str:" + p for p in parts}
        return set()

    def _lookup_key(self, holder: str, key: str, lookup) -> set:
        if holder == "py:sys:modules":
            return {key} if key == COURSE or key.startswith(COURSE + ".") else set()
        base = holder[5:]
        if base == "__globals__":
            return set(lookup(key))
        if base.startswith("py:"):
            return set()
        r = self.idx.member(base, key) if not base.startswith(("nb:", "fn:")) else None
        return {r} if r else set()

    @staticmethod
    def _fold_subscript(s: str, sl):
        try:
            if isinstance(sl, ast.Slice):
                vals = []
                for part in (sl.lower, sl.upper, sl.step):
                    if part is None:
                        vals.append(None)
                    elif isinstance(part, ast.Constant) and isinstance(part.value, int):
                        vals.append(part.value)
                    elif isinstance(part, ast.UnaryOp) and isinstance(part.op, ast.USub) \
                            and isinstance(part.operand, ast.Constant) and isinstance(part.operand.value, int):
                        vals.append(-part.operand.value)
                    else:
                        return None
                return s[slice(*vals)]
        except (ValueError, TypeError):
            return None
        return None

    def _call(self, node: ast.Call, lookup, depth: int) -> set:
        R = lambda n: self.resolve(n, lookup, depth + 1)  # noqa: E731
        funcs = R(node.func)
        args = node.args
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        out = set()
        for f in funcs:
            if f == "py:builtins:getattr" and len(args) >= 2:
                names = [t[4:] for t in R(args[1]) if t.startswith("str:")]
                for base in R(args[0]):
                    if base.startswith(("str:", "py:", "fn:", "nb:", "dict:")):
                        continue
                    for n in names:
                        r = self.idx.member(base, n)
                        if r:
                            out.add(r)
                    if not names and (base == COURSE or base.startswith(COURSE)) and self.idx.kind(base) in ("module",
                                                                                                             "class"):
                        out.add("dyn:" + base)
                if len(args) >= 3:
                    out |= R(args[2])
            elif f in ("py:builtins:vars",) and args:
                out |= {"dict:" + t for t in R(args[0]) if not t.startswith(("str:", "dict:"))}
            elif f in ("py:builtins:globals", "py:builtins:locals"):
                out.add("dict:__globals__")
            elif f in ("py:builtins:__import__", "py:importlib:__import__"):
                names = [t[4:] for t in R(args[0]) if t.startswith("str:")] if args else []
                fromlist = args[3] if len(args) >= 4 else kw.get("fromlist")
                has_from = fromlist is not None and not (isinstance(fromlist, (ast.List, ast.Tuple)) and not fromlist.elts) \
                    and not (isinstance(fromlist, ast.Constant) and not fromlist.value)
                for n in names:
                    if n == COURSE or n.startswith(COURSE + "."):
                        out.add(n if has_from else COURSE)
            elif f == "py:importlib:import_module":
                for n in [t[4:] for t in R(args[0]) if t.startswith("str:")] if args else []:
                    if n == COURSE or n.startswith(COURSE + "."):
                        out.add(n)
            elif f in ("py:functools:partial", "py:builtins:staticmethod", "py:builtins:classmethod",
                       "py:functools:wraps") and args:
                out |= {t for t in R(args[0]) if not t.startswith("str:")}
            elif f.startswith("py:operator:attrgetter") and args:
                out |= {"attrgetter:" + t[4:] for t in R(args[0]) if t.startswith("str:")}
            elif f.startswith("attrgetter:") and args:
                for base in R(args[0]):
                    cur = {base}
                    for part in f[len("attrgetter:"):].split("."):
                        cur = {r for c in cur if not c.startswith(("str:", "py:")) for r in [self.idx.member(c, part)] if r}
                    out |= cur
            elif f.startswith("str:"):
                pass
            elif f.startswith("dict:") and f.endswith(":get"):
                pass
            elif (COURSE in f) and self.idx.kind(f) == "class":
                out.add("inst:" + f)
        # "sep".join([...]), "abc".replace(...), vars(m).get("x")
        if isinstance(node.func, ast.Attribute):
            recv = R(node.func.value)
            meth = node.func.attr
            strs = [t[4:] for t in recv if t.startswith("str:")]
            if strs and meth == "join" and len(args) == 1 and isinstance(args[0], (ast.List, ast.Tuple)):
                elts = [[t[4:] for t in R(e) if t.startswith("str:")] for e in args[0].elts]
                if all(len(e) == 1 for e in elts):
                    out |= {"str:" + s.join(e[0] for e in elts) for s in strs}
            elif strs and meth in SAFE_STR_METHODS:
                cargs = []
                for a in args:
                    v = [t[4:] for t in R(a) if t.startswith("str:")]
                    if len(v) == 1:
                        cargs.append(v[0])
                    elif isinstance(a, ast.Constant) and isinstance(a.value, int):
                        cargs.append(a.value)
                    else:
                        cargs = None
                        break
                if cargs is not None:
                    for s in strs:
                        try:
                            out.add("str:" + str(getattr(s, meth)(*cargs)))
                        except Exception:
                            pass
            elif meth == "get" and args:
                keys = [t[4:] for t in R(args[0]) if t.startswith("str:")]
                for t in recv:
                    if t.startswith("dict:"):
                        for k in keys:
                            out |= self._lookup_key(t, k, lookup)
        return out

    # ---- statements
    def bind_import(self, node, put) -> None:
        """Calls ``put(name, targets)`` for every name an import statement binds."""
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    put(a.asname, {a.name} if a.name.split(".")[0] == COURSE else {"py:" + a.name})
                else:
                    top = a.name.split(".")[0]
                    put(top, {top} if top == COURSE else {"py:" + top})
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                return
            if mod == COURSE or mod.startswith(COURSE + "."):
                for a in node.names:
                    if a.name == "*":
                        m = self.idx.module(mod)
                        for n in (m.defs if m else {}):
                            if not n.startswith("_"):
                                put(n, {f"{mod}:{n}"})
                        continue
                    r = self.idx.member(mod, a.name)
                    put(a.asname or a.name, {r} if r else set())
            else:
                for a in node.names:
                    if a.name != "*":
                        put(a.asname or a.name, {f"py:{mod}:{a.name}"})


def _const_tuple(node, R):
    if isinstance(node, ast.Tuple):
        vals = []
        for e in node.elts:
            v = [t[4:] for t in R(e) if t.startswith("str:")]
            if len(v) != 1:
                return None
            vals.append(v[0])
        return tuple(vals)
    v = [t[4:] for t in R(node) if t.startswith("str:")]
    return (v[0],) if len(v) == 1 else None


def _stored_names(target) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _assign_pairs(targets, value):
    """(target node, value node) pairs of an assignment, element-wise for tuples of equal length."""
    for t in targets:
        if isinstance(t, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
                and len(t.elts) == len(value.elts) and not any(isinstance(e, ast.Starred) for e in t.elts):
            yield from _assign_pairs_elementwise(t.elts, value.elts)
        else:
            yield t, value


def _assign_pairs_elementwise(ts, vs):
    for t, v in zip(ts, vs):
        yield from _assign_pairs([t], v)


def _lookup_in(env: dict, local: dict | None = None, locals_: set | None = None):
    def lookup(name: str):
        if locals_ is not None and name in locals_:
            return local.get(name, set())
        if name in env:
            return env[name]
        if name in BUILTIN_HOOKS or name in ("staticmethod", "classmethod"):
            return {"py:builtins:" + name}
        return set()
    return lookup


# --------------------------------------------------------------------------- regions of student code

@dataclass
class Region:
    cell: int                 # index of the cell in the rebuilt notebook
    name: str                 # "<module>" (the cell's top level) or the top-level def/class name
    uses: list = field(default_factory=list)   # (target, source text)
    calls: set = field(default_factory=set)    # "fn:<cell>:<name>" of student functions it mentions


class NotebookCode:
    """Binds names through a notebook's code cells in order and collects, for every region of
    student code, the targets it mentions. ``cells`` is a list of (index, kind, source) with kind
    "course" or "student"."""

    def __init__(self, cells: list, index: CourseIndex | None = None):
        self.idx = index or course_index()
        self.r = Resolver(self.idx)
        self.env: dict[str, set] = {}
        self.regions: dict[tuple, Region] = {}
        self.functions: dict[str, tuple] = {}   # "fn:<cell>:<name>" -> (cell, name)
        self.nb_defined: set = set()            # functions def'd in course cells
        self.events: list = []                  # (position, name, targets) at the end of each cell
        self.pos = 0
        self._touched: set = set()
        pending = []
        for i, kind, src in cells:
            tree = parse(src)
            if tree is None:
                continue
            if kind == "student":
                self.regions[(i, "<module>")] = Region(i, "<module>")
            for stmt in tree.body:
                self._top(stmt, i, kind, pending)
            self.pos += 1
            self.events += [(self.pos, n, set(self.env.get(n, ()))) for n in sorted(self._touched)]
            self._touched = set()
        # a function runs later (the tests are cells of their own): a global name in it holds what it
        # held when the function was defined, or what it held at the end of any later cell
        for i, name, node, pos, snap in pending:
            env = snap
            for p, n, t in self.events:
                if p > pos:
                    env.setdefault(n, set()).update(t)
            self._function_region(i, name, node, env)

    def _bind(self, name: str, targets, replace: bool = True) -> None:
        targets = set(targets)
        if replace:
            self.env[name] = set(targets)
        else:
            self.env.setdefault(name, set()).update(targets)
        self._touched.add(name)

    # top level (flow-sensitive: a plain assignment replaces what the name held)
    def _top(self, stmt, i: int, kind: str, pending: list, replace: bool = True) -> None:
        student = kind == "student"
        self.pos += 1
        lookup = _lookup_in(self.env)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if student:
                key = f"fn:{i}:{stmt.name}"
                self.functions[key] = (i, stmt.name)
                self.regions[(i, stmt.name)] = Region(i, stmt.name)
                self._bind(stmt.name, {key})
                pending.append((i, stmt.name, stmt, self.pos, {k: set(v) for k, v in self.env.items()}))
            else:
                if isinstance(stmt, ast.ClassDef):
                    self.nb_defined.discard(stmt.name)
                else:
                    self.nb_defined.add(stmt.name)
                self._bind(stmt.name, {"nb:" + stmt.name})
            return
        if student:
            self._collect_uses(stmt, self.regions[(i, "<module>")], lookup, skip_defs=True)
        for n in _walk_no_defs(stmt):
            if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name):
                self._bind(n.target.id, self.r.resolve(n.value, lookup), replace=False)
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            self.r.bind_import(stmt, lambda name, targets: self._bind(name, targets, replace))
        elif isinstance(stmt, ast.Assign):
            for t, v in _assign_pairs(stmt.targets, stmt.value):
                targets = self.r.resolve(v, lookup)
                if isinstance(t, ast.Name):
                    self._bind(t.id, targets, replace)
                elif isinstance(t, (ast.Tuple, ast.List)):
                    for n in _stored_names(t):
                        self._bind(n, targets, replace=False)
                elif isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and targets:
                    self._bind(t.value.id, targets, replace=False)  # d["f"] = ref: d holds it
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and stmt.value is not None:
            if isinstance(stmt.target, ast.Name):
                self._bind(stmt.target.id, self.r.resolve(stmt.value, lookup),
                           replace and isinstance(stmt, ast.AnnAssign))
        elif isinstance(stmt, ast.Delete):
            for t in stmt.targets:
                if isinstance(t, ast.Name) and replace:
                    self.env.pop(t.id, None)
                    self._touched.add(t.id)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            targets = self.r.resolve(stmt.iter, lookup)
            for n in _stored_names(stmt.target):
                self._bind(n, targets, replace=False)
            for b in stmt.body + stmt.orelse:
                self._top(b, i, kind, pending, replace=False)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                if item.optional_vars is not None:
                    targets = self.r.resolve(item.context_expr, lookup)
                    for n in _stored_names(item.optional_vars):
                        self._bind(n, targets, replace=False)
            for b in stmt.body:
                self._top(b, i, kind, pending, replace=False)
        elif isinstance(stmt, (ast.If, ast.While)):
            for b in stmt.body + stmt.orelse:
                self._top(b, i, kind, pending, replace=False)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            for b in stmt.body + stmt.orelse + stmt.finalbody + [x for h in stmt.handlers for x in h.body]:
                self._top(b, i, kind, pending, replace=False)

    def _function_region(self, i: int, name: str, node, env: dict) -> None:
        region = self.regions[(i, name)]
        local: dict[str, set] = {}
        locals_ = _local_names(node)
        lookup = _lookup_in(env, local, locals_)
        for _ in range(2):  # bindings inside the function, flow-insensitive
            for n in ast.walk(node):
                if isinstance(n, (ast.Import, ast.ImportFrom)):
                    self.r.bind_import(n, lambda nm, targets: local.setdefault(nm, set()).update(targets))
                elif isinstance(n, ast.Assign):
                    for t, v in _assign_pairs(n.targets, n.value):
                        targets = self.r.resolve(v, lookup)
                        for nm in _stored_names(t) if not isinstance(t, (ast.Attribute,)) else []:
                            if nm in locals_:
                                local.setdefault(nm, set()).update(targets)
                elif isinstance(n, (ast.AnnAssign, ast.AugAssign)) and n.value is not None \
                        and isinstance(n.target, ast.Name) and n.target.id in locals_:
                    local.setdefault(n.target.id, set()).update(self.r.resolve(n.value, lookup))
                elif isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name) and n.target.id in locals_:
                    local.setdefault(n.target.id, set()).update(self.r.resolve(n.value, lookup))
                elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
                    targets = self.r.resolve(n.iter, lookup)
                    for nm in _stored_names(n.target):
                        if nm in locals_:
                            local.setdefault(nm, set()).update(targets)
                elif isinstance(n, ast.withitem) and n.optional_vars is not None:
                    targets = self.r.resolve(n.context_expr, lookup)
                    for nm in _stored_names(n.optional_vars):
                        if nm in locals_:
                            local.setdefault(nm, set()).update(targets)
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and n is not node:
                    for d, a in zip(reversed(n.args.defaults), reversed(n.args.posonlyargs + n.args.args)):
                        if a.arg in locals_:
                            local.setdefault(a.arg, set()).update(self.r.resolve(d, lookup))
            if not isinstance(node, ast.ClassDef):
                for d, a in zip(reversed(node.args.defaults), reversed(node.args.posonlyargs + node.args.args)):
                    local.setdefault(a.arg, set()).update(self.r.resolve(d, lookup))
                for d, a in zip(node.args.kw_defaults, node.args.kwonlyargs):
                    if d is not None:
                        local.setdefault(a.arg, set()).update(self.r.resolve(d, lookup))
        self._collect_uses(node, region, lookup, skip_defs=False)

    def _collect_uses(self, node, region: Region, lookup, skip_defs: bool) -> None:
        it = _walk_no_defs(node) if skip_defs else ast.walk(node)
        for n in it:
            if isinstance(n, (ast.Name, ast.Attribute, ast.Subscript)) and not isinstance(n.ctx, ast.Load):
                continue
            if isinstance(n, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)):
                for t in self.r.resolve(n, lookup):
                    if t.startswith("fn:"):
                        region.calls.add(t)
                    elif is_course(t) or t.startswith("dyn:"):
                        region.uses.append((t, _text(n)))


def _text(node) -> str:
    try:
        s = ast.unparse(node)
    except Exception:
        return ""
    return s if len(s) <= 80 else s[:77] + "..."


def _walk_no_defs(node):
    """ast.walk, but not into function or class bodies (they run later, and are regions of their own)."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        for c in ast.iter_child_nodes(n):
            if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                # decorators, defaults and bases run now
                todo.extend(c.decorator_list)
                if isinstance(c, ast.ClassDef):
                    todo.extend(c.bases)
                else:
                    todo.extend(x for x in c.args.defaults + c.args.kw_defaults if x is not None)
                continue
            todo.append(c)


def _local_names(fn) -> set:
    """Names local to a function or class region: parameters and anything bound in it, nested
    scopes included (an over-approximation: a name local anywhere in it is local everywhere)."""
    out, globals_ = set(), set()
    for n in ast.walk(fn):
        if isinstance(n, (ast.Global, ast.Nonlocal)):
            globals_.update(n.names)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                out.add(a.asname or a.name.split(".")[0])
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is not fn:
            out.add(n.name)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
    return out - globals_


# --------------------------------------------------------------------------- what each exercise's reference is

def _heads(node, assigns: dict, resolve, depth: int = 0) -> set:
    """The course_lib calls a test value is made of (``transition_counts(h, n).toarray()[0]``)."""
    if node is None or depth > 12:
        return set()
    H = lambda n: _heads(n, assigns, resolve, depth + 1)  # noqa: E731
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in PASSTHROUGH_METHODS:
            return H(f.value)
        name = f.attr if isinstance(f, ast.Attribute) else (f.id if isinstance(f, ast.Name) else "")
        if name in PASSTHROUGH_FUNCS and node.args:
            return H(node.args[0])
        return {t for t in resolve(f) if is_course(t)}
    if isinstance(node, (ast.Attribute, ast.Subscript)):
        return H(node.value)
    if isinstance(node, ast.BinOp):
        return H(node.left) | H(node.right)
    if isinstance(node, ast.UnaryOp):
        return H(node.operand)
    if isinstance(node, (ast.Tuple, ast.List)):
        return set().union(*[H(e) for e in node.elts]) if node.elts else set()
    if isinstance(node, ast.Name):
        return set().union(*[H(v) for v in assigns.get(node.id, [])]) if assigns.get(node.id) else set()
    return set()


def _mentions(node, names: set, assigns: dict, depth: int = 0) -> bool:
    """Whether an expression calls one of ``names`` (directly or through the test's variables)."""
    if node is None or depth > 8:
        return False
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names:
            return True
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in assigns:
            if any(_mentions(v, names, {k: x for k, x in assigns.items() if k != n.id}, depth + 1)
                   for v in assigns[n.id]):
                return True
    return False


def compared_references(test_source: str, env: dict, index: CourseIndex, nb_functions=frozenset(),
                        answer_names=frozenset()) -> set:
    """course_lib functions and methods a test compares the answer with: the operands of its
    asserted comparisons and of np.allclose-like calls (directly, or through a variable). A course
    function the test applies to the answer's result (``metrics.evaluate(build_and_train(...))``)
    measures it and is no reference, wherever else it appears."""
    tree = parse(test_source)
    if tree is None:
        return set()
    r = Resolver(index)
    local = {k: set(v) for k, v in env.items()}
    assigns: dict[str, list] = {}
    lookup = _lookup_in(local)
    for stmt in ast.walk(tree):
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            r.bind_import(stmt, lambda name, targets: local.__setitem__(name, set(targets)))
        elif isinstance(stmt, ast.Assign):
            for t, v in _assign_pairs(stmt.targets, stmt.value):
                for n in _stored_names(t):
                    assigns.setdefault(n, []).append(v)
                    local.setdefault(n, set()).update(r.resolve(v, lookup))
    resolve = lambda n: r.resolve(n, lookup)  # noqa: E731
    measures = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and answer_names and any(
                _mentions(x, set(answer_names), assigns) for x in n.args + [k.value for k in n.keywords]):
            measures |= {t for t in resolve(n.func) if is_course(t)}
    out = set()
    roots = [n.test for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    roots += [n.value for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    for root in roots:
        for n in ast.walk(root):
            if isinstance(n, ast.Compare):
                for side in [n.left] + n.comparators:
                    out |= _heads(side, assigns, resolve)
            elif isinstance(n, ast.Call):
                f = n.func
                name = f.attr if isinstance(f, ast.Attribute) else (f.id if isinstance(f, ast.Name) else "")
                if name in COMPARE_FUNCS:
                    for a in n.args:
                        out |= _heads(a, assigns, resolve)
    out -= measures
    return {t for t in out if (index.kind(t) in ("function", "method") or t[3:] in nb_functions and t.startswith("nb:"))}


@dataclass
class Exercises:
    """Per answer cell (grade_id): what it must not use, what its solution uses, its names."""
    forbidden: dict = field(default_factory=dict)     # answer gid -> set of targets
    names: dict = field(default_factory=dict)         # answer gid -> top-level function names (same-name rule)
    owners: dict = field(default_factory=dict)        # top-level def/class name of an answer -> answer gid
    tested: dict = field(default_factory=dict)        # test gid -> targets its tests compare with
    allowed: dict = field(default_factory=dict)       # answer gid -> targets its solution uses

    def forbids(self, gid, target: str) -> bool:
        if gid is None:
            return self.forbids_anywhere(target)
        if target in self.allowed.get(gid, ()):
            return False
        if target in self.forbidden.get(gid, ()):
            return True
        # a course_lib attribute named like the answer's function, even one that does not exist
        # (yet): ``cl.data.describe`` for ``describe``
        return target.startswith(COURSE) and ":" in target and short(target) in self.names.get(gid, ()) \
            and "." not in target.partition(":")[2]

    def forbids_anywhere(self, target: str) -> bool:
        """For student code that belongs to no exercise: the references no exercise allows."""
        if any(target in a for a in self.allowed.values()):
            return False
        return any(self.forbids(g, target) for g in self.forbidden)

    def watch(self, index: CourseIndex) -> list[str]:
        """The functions the grading run wraps (course_lib functions and methods, notebook functions)."""
        out = set()
        for targets in self.forbidden.values():
            for t in targets:
                if index.kind(t) in ("function", "method", "notebook"):
                    out.add(t)
        return sorted(out)


def exercise_references(name: str, source_cells: list, test_of_answer: dict, index: CourseIndex | None = None) -> Exercises:
    """What counts as each exercise's reference (see the module's docstring).

    ``source_cells``: the instructor's notebook as (role, grade_id, source, hidden) with role
    answer | test | course."""
    idx = index or course_index()
    code = [(k, "student" if role == "answer" else "course", src)
            for k, (role, gid, src, hidden) in enumerate(source_cells) if role in ("answer", "course")]
    nc = NotebookCode(code, idx)
    ex = Exercises()
    answer_at = {k: gid for k, (role, gid, src, hidden) in enumerate(source_cells) if role == "answer"}
    tests = {gid: (src, hidden) for role, gid, src, hidden in source_cells if role == "test"}
    for k, gid in answer_at.items():
        tree = parse(source_cells[k][2])
        top_fn = {n.name for n in (tree.body if tree else []) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        top_all = top_fn | {n.name for n in (tree.body if tree else []) if isinstance(n, ast.ClassDef)}
        ex.names[gid] = top_fn
        for n in top_all:
            ex.owners.setdefault(n, gid)
        test = test_of_answer.get(gid)
        refs = set()
        if test in tests:
            src, hidden = tests[test]
            ex.tested[test] = compared_references(src + "\n" + hidden, nc.env, idx, nc.nb_defined, top_all)
            refs |= ex.tested[test]
        for fn in top_fn:
            refs |= set(idx.functions_named(fn))
        refs |= set(EXTRA_REFERENCES.get(name, {}).get(gid, []))
        allowed = set()
        for (cell, rname), region in nc.regions.items():
            if cell == k:
                allowed |= {t for t, _ in region.uses}
                for call in region.calls:  # a helper of the solution defined in the same cell
                    c2 = nc.functions.get(call)
                    if c2 and c2[0] == k:
                        allowed |= {t for t, _ in nc.regions[c2].uses}
        allowed |= set(ALLOWED_HELPERS.get(name, {}).get(gid, []))
        ex.allowed[gid] = allowed
        ex.forbidden[gid] = {t for t in refs if is_course(t)} - allowed
    return ex


# --------------------------------------------------------------------------- checking a rebuilt submission

def _cells_of(nb: dict) -> list:
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        g = cell.get("metadata", {}).get("grader", {})
        role = g.get("role")
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if role in STUDENT_ROLES:
            out.append((i, "student", src))
        elif role in COURSE_ROLES:
            out.append((i, "course", src))
    return out


def _role(nb: dict, i: int) -> tuple[str, str]:
    g = nb["cells"][i].get("metadata", {}).get("grader", {}) if 0 <= i < len(nb.get("cells", [])) else {}
    return g.get("role", ""), g.get("grade_id", "")


def _answer_of(nb, i: int, name: str, ex: Exercises):
    """The answer (grade_id) a region of student code is, or None for a helper or the top level of
    the student's own cell: an answer cell (all of it), or a function or class of the student's
    own cell named like an answer's (a second definition)."""
    role, gid = _role(nb, i)
    if role in ("answer", "stub") and gid in ex.forbidden:
        return gid
    top = name.split(".")[0]
    return ex.owners.get(top) if name != "<module>" else None


def static_hits(a, nb: dict) -> list[tuple]:
    """(answer gid, target, cell index, region name, source text) for every mention of a reference
    its exercise must not use, in an answer of the rebuilt notebook ``nb`` or in a helper function
    of the student's that the answer mentions (through other helpers, not through other answers).
    The top level of the student's own cells is not judged: a student comparing a result with the
    reference there does not make an answer of it."""
    ex: Exercises = a.exercises
    nc = NotebookCode(_cells_of(nb))
    hits, seen = [], set()
    for (i, name), region in nc.regions.items():
        gid = _answer_of(nb, i, name, ex)
        if gid is None:
            continue
        todo, visited = [region], set()
        while todo:
            r = todo.pop()
            if (r.cell, r.name) in visited:
                continue
            visited.add((r.cell, r.name))
            for t, txt in r.uses:
                if not t.startswith("dyn:") and ex.forbids(gid, t) and (gid, t) not in seen:
                    seen.add((gid, t))
                    hits.append((gid, t, r.cell, r.name, txt))
            for call in r.calls:
                key = nc.functions.get(call)
                if key in nc.regions and _answer_of(nb, key[0], key[1], ex) is None:
                    todo.append(nc.regions[key])
    return hits


def dynamic_lookups(nb: dict) -> list[tuple]:
    """(cell, text) of student code that looks up a course_lib attribute by a name computed at run time."""
    nc = NotebookCode(_cells_of(nb))
    return [(i, txt) for (i, name), region in nc.regions.items() for t, txt in region.uses if t.startswith("dyn:")]


def _where(nb, i: int, name: str) -> str:
    role, gid = _role(nb, i)
    fn = "" if name == "<module>" else f", in `{name}`"
    if role in ("answer", "stub"):
        return f"the answer cell `{gid}`{fn}"
    return f"the student's own cell {i}{fn}"


def static_flags(a, nb: dict) -> list[str]:
    flags = []
    for gid, t, i, name, txt in static_hits(a, nb):
        flags.append(f"integrity: the answer `{gid}` reaches {owner(t)} reference `{short(t)}` ({show(t)}) instead "
                     f"of implementing it: `{txt}` in {_where(nb, i, name)}")
    for i, txt in dynamic_lookups(nb)[:3]:
        flags.append(f"suspicious code: looks up a course_lib attribute by a name computed at run time (`{txt}`, "
                     f"cell {i})")
    return flags


def dynamic_flags(a, nb: dict, steps: list, records: list) -> list[str]:
    """Integrity flags from the grading run's records ``(target, frames)``: ``frames`` is
    ``"step/qualname;..."``, the frames of notebook code on the stack when the reference was
    called, innermost first (the innermost is never the course's or a test's; step -1: code the
    submission compiled at run time). Going outwards, run-time code and the student's helpers are
    seen through; the first answer decides the exercise. A call made (through them) by the top level
    of the student's own cell or by one of the course's cells is not judged; one made by a test
    with no answer in between (a reference bound to the answer's name, code compiled at run
    time) counts against the references no exercise allows."""
    ex: Exercises = a.exercises
    out, seen = [], set()
    for target, frames_text in records:
        frames = []
        for part in frames_text.split(";"):
            step, _, qual = part.partition("/")
            try:
                frames.append((int(step), qual))
            except ValueError:
                continue
        if not frames:
            continue
        gid, where, skip = None, None, False
        for step, qual in frames:
            if not (0 <= step < len(steps)):
                continue  # code compiled at run time: see through it
            kind, key = steps[step][0], steps[step][1]
            if kind != "cell":
                break  # a test called it
            cell, _, role = key.partition(":")
            if role in COURSE_ROLES:
                skip = True
                break
            top = "<module>" if qual.startswith("<") else qual.split(".")[0]
            g = _answer_of(nb, int(cell), top, ex)
            if g is not None:
                gid, where = g, (int(cell), top)
                break
            if top == "<module>":
                skip = True
                break
        if skip or not ex.forbids(gid, target) or (gid, target) in seen:
            continue
        seen.add((gid, target))
        what = f"the answer `{gid}`" if gid else "the submission"
        place = _where(nb, *where) if where else "code a test called directly (not an answer's function)"
        out.append(f"integrity: {what} called {owner(target)} reference `{short(target)}` ({show(target)}) in the "
                   f"grading run, from {place}, instead of implementing it")
    return out
