"""TRN403: `.view()` on a transposed or permuted tensor."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.lint.rule import Invalid, Rule, Valid, dotted_name, target_names

_METHODS = frozenset({"transpose", "permute", "t", "swapaxes", "swapdims", "movedim", "moveaxis"})
_ATTRS = frozenset({"T", "mT", "mH", "H"})
_FUNCS = frozenset({"torch.transpose", "torch.permute", "torch.t", "torch.swapaxes", "torch.swapdims",
                    "torch.movedim", "torch.moveaxis"})
# Methods whose result keeps the input's (non-contiguous) strides: element-wise ops and casts.
_KEEPS_LAYOUT = frozenset({"eq", "ne", "gt", "ge", "lt", "le", "float", "double", "half", "long", "int", "bool",
                           "abs", "neg", "exp", "log", "sigmoid", "tanh", "relu", "clamp", "mul", "add", "sub",
                           "div", "pow", "sqrt", "to", "type", "type_as", "detach", "masked_fill", "logical_not"})
_DTYPE_WORDS = ("dtype", "float", "int", "uint", "bool", "half", "complex", "bfloat")
# In-place methods that move a tensor's axes: the sizes unpacked before no longer name its axes in order.
_MOVES_IN_PLACE = frozenset({"transpose_", "t_", "swapaxes_", "swapdims_", "resize_", "set_", "squeeze_",
                             "unsqueeze_", "as_strided_"})
_REORDERED = ("`.{method}({sizes})` lists the sizes of the axes unpacked from `{shape}` in another order: "
              "`{method}` keeps memory order, so positions and features are mixed instead of moved. Use "
              "`.permute(...)`/`.transpose(...)` to move axes.")


class ViewAsPermute(Rule):
    """Flags `.view(...)` on the result of `transpose` / `permute` / `.t()` / `.T`.

    ## What it does
    Finds `.view(...)` and `.view_as(...)` called on a tensor that was just
    transposed or permuted (`transpose`, `permute`, `t`, `.T`, `.mT`,
    `swapaxes`, `swapdims`, `movedim`, `moveaxis`, as methods or `torch.*`
    functions), directly (`x.permute(0, 2, 1).view(b, -1)`) or through a
    variable of the same function (`y = x.transpose(1, 2)` then `y.view(...)`,
    with no reassignment of `y` in between). `.contiguous().view(...)` and
    `.reshape(...)` are fine; an identity `permute(0, 1, 2)` and
    `.view(dtype)` (a reinterpretation, as numpy's) are ignored. The layout
    survives element-wise methods and casts (`.eq(...)`, `.float()`) and
    slicing, as it does in torch: `pred.t().eq(target)[:k].view(-1)` (the old
    top-k accuracy helper of many training scripts) raises on current PyTorch.

    A view that merges axes which stay consecutive and in order is valid on a
    permuted tensor (`x.permute(0, 2, 3, 1).view(1, -1, dim)` merges the
    original axes 2 and 3, which `view` accepts), so when `permute`'s axes are
    written out (or a `transpose` of two literal axes), only a view with fewer
    sizes than the order has unbroken runs is reported: it raises unless an
    axis has size 1.

    Only views that visibly merge axes are reported: a `-1` or a product among
    the sizes, at most two sizes, or fewer sizes than `permute` has axes.
    Splitting a single axis is valid on a transposed tensor (torch's own
    multi-head attention does `q.view(bsz, num_heads, tgt_len, head_dim)` on a
    transposed `q`), so `view(B, H, L, D)` with plain sizes is left alone.

    It also flags a `view`/`reshape` that "moves" named axes: the sizes were
    unpacked from the same tensor's shape (`B, L, H, D = q.shape`) and the view
    lists two or more of those names in another order (`q.view(B, H, L, -1)`,
    Informer's attention before its fix). Keeping the order, merging or
    splitting adjacent axes (`q.view(B, L, H * D)`) and views after a
    `transpose`/`permute` that rebinds the tensor are fine.

    ## Why is this bad?
    `view` never moves data: it reinterprets the same memory with a new shape.
    After `transpose`/`permute` the tensor is no longer laid out in row-major
    order, so `view` either raises "view size is not compatible with input
    tensor's size and stride" or, when the moved axes have size 1, silently
    succeeds. Either way the code mixes the two ideas the seed warns about:
    `view`/`reshape` merge or split axes in memory order, `permute` moves axes.
    Using `view` to "transpose" mixes samples or features across the batch.

    ## Known problems
    Tensors passed between functions or stored on `self` are not followed, and
    a three-or-more-size `view` that merges axes without `-1` or a product
    is missed. Reordered sizes are recognised only by the names the same
    function unpacked from that tensor's `.shape` / `.size()`.

    ## Example
    ```python
    x = x.permute(0, 2, 1).view(batch, -1)
    ```

    ## Use instead
    ```python
    x = x.permute(0, 2, 1).reshape(batch, -1)  # or .contiguous().view(batch, -1)
    ```
    """

    CODE = "TRN403"
    MESSAGE = ("`.view()` on a transposed/permuted tensor reinterprets memory instead of moving axes: use "
               "`permute`/`transpose` to move axes, then `.reshape(...)` (or `.contiguous().view(...)`) to merge them.")
    TRIGGERS = ("view", "reshape")

    VALID = [
        Valid("x = x.permute(0, 2, 1).contiguous().view(b, -1)\n"),
        Valid("y = x.transpose(1, 2).reshape(b, -1)\n"),
        Valid("""
            y = x.transpose(1, 2)
            y = y.contiguous()
            z = y.view(b, -1)
            """),
        # A dtype reinterpretation, as numpy's view.
        Valid("bits = arr.T.view(np.uint8)\n"),
        # The top-k accuracy done right: reshape, or a prediction that was never transposed.
        Valid("""
            def accuracy(output, target, topk=(1,)):
                _, pred = output.topk(max(topk), 1, True, True)
                pred = pred.t()
                correct = pred.eq(target.view(1, -1).expand_as(pred))
                return [correct[:k].reshape(-1).float().sum(0) for k in topk]
            """),
        Valid("""
            def accuracy(output, target, k):
                pred = output.argmax(1)
                correct = pred.eq(target)
                return correct[:k].view(-1).float().mean()
            """),
        # Identity permute.
        Valid("y = x.permute(0, 1, 2).view(b, -1)\n"),
        # Merging axes that stay consecutive and in order is valid on a permuted tensor: channels-last
        # position embeddings (many vision transformers) merge the height and width axes, 2 and 3.
        Valid("""
            def resize(pos, dim, h, w):
                pos = nn.functional.interpolate(pos, size=(h, w), mode="bicubic")
                return pos.permute(0, 2, 3, 1).view(1, -1, dim)
            """),
        Valid("w = static_weight.float().T.view(heads, -1, kernel)\n"),  # adds a unit axis, merges nothing
        Valid("""
            def tokens(x, b):
                y = x.transpose(2, 3)
                return y.view(b * 2, 3, 4, 5)
            """),
        # Splitting one axis of a transposed tensor is valid (torchvision's MViT).
        Valid("""
            rel = torch.matmul(r_q, rt.transpose(1, 2)).transpose(0, 1)
            rel = rel.view(B, n_head, q_h, q_w, q_t, k_t)
            """),
        # Rebound in a branch before the view.
        Valid("""
            def f(q, bsz):
                q = q.transpose(0, 1)
                q = q.contiguous()
                return q.view(bsz, -1)
            """),
        # The seed's point: view and permute used for what they do.
        Valid("""
            import torch
            x = torch.tensor([[1, 2, 3], [4, 5, 6]])
            a = x.view(3, 2)
            b = x.permute(1, 0)
            """),
        # Sizes unpacked from the shape, used in the same order: merging or splitting adjacent axes.
        Valid("""
            def forward(self, queries):
                B, L, _ = queries.shape
                H = self.n_heads
                queries = self.query_projection(queries).view(B, L, H, -1)
                out = queries.reshape(B, L * H, -1)
                return out.view(B, L, -1)
            """),
        # The axes moved by transpose first, then the view (Informer's fix).
        Valid("""
            def forward(self, queries, keys):
                B, L_Q, H, D = queries.shape
                queries = queries.transpose(2, 1)
                q = queries.contiguous().view(B, H, L_Q, D)
                return q
            """),
        # The names come from another tensor's shape.
        Valid("""
            def forward(self, x, mask):
                B, C, H, W = x.shape
                y = self.proj(x).permute(0, 2, 3, 1)
                return y.reshape(B, H, W, C)
            """),
        # The sizes were rebound before the view: they no longer name the unpacked axes.
        Valid("""
            def split(x):
                T, B = x.shape
                T, B = B, T
                return x.view(T, B)
            """),
    ]
    INVALID = [
        Invalid("out = x.permute(0, 2, 1).view(b, -1)\n", line=1, column=7),
        Invalid("""
            def forward(self, x):
                h = x.transpose(1, 2)
                return h.view(h.size(0), -1)
            """, line=3, column=12),
        Invalid("""
            import torch
            flat = torch.transpose(x, 0, 1).view(-1)
            """, line=2),
        Invalid("y = w.t().view_as(z)\n"),
        Invalid("y = x.mT.view(b, n * m)\n"),
        # Multi-head attention merging heads without contiguous().
        Invalid("out = attn.transpose(1, 2).view(bs, seq, heads * dim)\n", line=1, column=7),
        # The classic top-k accuracy: element-wise ops and a slice keep the transposed layout.
        Invalid("""
            import torch
            def accuracy(output, target, topk=(1,)):
                _, pred = output.topk(max(topk), 1, True, True)
                pred = pred.t()
                correct = pred.eq(target.view(1, -1).expand_as(pred))
                return [correct[:k].view(-1).float().sum(0) for k in topk]
            """, line=6, column=13),
        # Informer's ProbAttention: (B, L, H, D) inputs "moved" to (B, H, L, D) with a view.
        Invalid("""
            def forward(self, queries, keys, values, attn_mask):
                B, L_Q, H, D = queries.shape
                _, L_K, _, _ = keys.shape
                queries = queries.view(B, H, L_Q, -1)
                keys = keys.view(B, H, L_K, -1)
            """, line=4, column=15),
        # Channels-first to channels-last with reshape.
        Invalid("""
            import torch
            def to_tokens(x: torch.Tensor) -> torch.Tensor:
                n, c, h, w = x.size()
                return x.reshape(n, h * w, c)
            """, line=4, column=12),
        Invalid("""
            def attend(q):
                batch, seq, heads, dim = q.shape
                scores = q.contiguous().view(batch, heads, seq, dim) @ k
                return scores
            """, line=3),
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        # name -> holds a transposed tensor; "#ndim:<name>" -> its known rank (from permute's arguments)
        self.scopes: list[dict[str, object]] = [{}]
        # per scope: tensor name -> (the names its shape was unpacked into, None for `_`; the shape as written)
        self.shapes: list[dict[str, tuple[list[Optional[str]], str]]] = [{}]

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.append({})
        self.shapes.append({})

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.scopes.pop()
        self.shapes.pop()

    def leave_Assign(self, original_node: cst.Assign) -> None:
        moved = self._moves_axes(original_node.value)
        for target in original_node.targets:
            names = target_names(target.target)
            for name in names:
                self.scopes[-1][name] = moved and isinstance(target.target, cst.Name)
                self.scopes[-1]["#ndim:" + name] = _ndim(original_node.value) if moved else None
                self.scopes[-1]["#perms:" + name] = self._perms(original_node.value) if moved else None
            self._forget(names)
            unpacked = _unpacked_shape(target.target, original_node.value)
            if unpacked is not None:
                self.shapes[-1][unpacked[0]] = (unpacked[1], unpacked[2])

    def leave_AugAssign(self, original_node: cst.AugAssign) -> None:
        for name in target_names(original_node.target):
            self.scopes[-1][name] = False
        self._forget(target_names(original_node.target), tensors=False)

    def visit_For(self, node: cst.For) -> None:
        for name in target_names(node.target):
            self.scopes[-1][name] = False
        self._forget(target_names(node.target))

    def _forget(self, names: list[str], tensors: bool = True) -> None:
        """Drop the unpacked shapes that a rebinding of ``names`` (a tensor, or one of its sizes) invalidates."""
        shapes = self.shapes[-1]
        if not shapes or not names:
            return
        for tensor in list(shapes):
            if (tensors and tensor in names) or any(n in names for n in shapes[tensor][0]):
                del shapes[tensor]

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute):
            return
        if func.attr.value in _MOVES_IN_PLACE and isinstance(func.value, cst.Name):
            self.shapes[-1].pop(func.value.value, None)  # `x.transpose_(1, 2)`: x's axes moved in place
            return
        if func.attr.value in ("view", "reshape"):
            self._check_reordered(node, func)
        if func.attr.value not in ("view", "view_as"):
            return
        if func.attr.value == "view" and _is_dtype_view(self, node):
            return
        base = func.value
        if isinstance(base, cst.Name) and self.scopes[-1].get(base.value, False):
            ndim = self.scopes[-1].get("#ndim:" + base.value)
        elif self._moves_axes(base):
            ndim = _ndim(base)
        else:
            return
        if func.attr.value == "view_as":
            self.report(node)
        elif _merges(node, ndim) and not _may_merge(self._perms(base), node):
            self.report(node)

    def _check_reordered(self, node: cst.Call, func: cst.Attribute) -> None:
        """Report a view whose sizes name the tensor's unpacked axes in another order (`view(B, H, L, -1)`)."""
        base = func.value
        if isinstance(base, cst.Call) and isinstance(base.func, cst.Attribute) and not base.args \
                and base.func.attr.value == "contiguous":
            base = base.func.value  # `.contiguous()` copies memory order, it moves no axis
        if not isinstance(base, cst.Name) or base.value not in self.shapes[-1] or any(a.star for a in node.args):
            return
        axes, shape = self.shapes[-1][base.value]
        sizes = [a.value for a in node.args if a.keyword is None]
        if len(sizes) == 1 and isinstance(sizes[0], (cst.Tuple, cst.List)):
            sizes = [e.value for e in sizes[0].elements]
        named = [n for size in sizes for n in _factors(size) if n in axes]
        if len(named) < 2 or len(set(named)) != len(named):
            return
        positions = [axes.index(n) for n in named]
        if positions != sorted(positions):
            self.report(node, _REORDERED.format(method=func.attr.value, sizes=", ".join(
                self.context.module.code_for_node(s) for s in sizes), shape=shape))

    def _perms(self, expr: cst.BaseExpression) -> Optional[list[list[int]]]:
        """Return the axis orders ``expr`` may have (``permute(0, 2, 1)`` -> [[0, 2, 1]]), or None if unknown."""
        if isinstance(expr, cst.Name):
            known = self.scopes[-1].get("#perms:" + expr.value)
            return known if isinstance(known, list) else None
        if isinstance(expr, cst.Attribute) and expr.attr.value in ("T", "H"):
            return [[1, 0]]  # a matrix's transpose (`.T` of other ranks is deprecated)
        if isinstance(expr, cst.Attribute) and expr.attr.value in ("mT", "mH"):
            return [list(range(n - 2)) + [n - 1, n - 2] for n in range(2, 10)]  # the last two axes swapped
        if isinstance(expr, cst.Subscript):
            slices = all(isinstance(e.slice, cst.Slice) for e in expr.slice)
            return self._perms(expr.value) if slices else None  # an integer index drops an axis
        if not isinstance(expr, cst.Call) or not isinstance(expr.func, cst.Attribute):
            return None
        method = expr.func.attr.value
        if method in _KEEPS_LAYOUT:
            return self._perms(expr.func.value)
        dims = _permute_dims(expr) if not any(a.star for a in expr.args) else [None]
        if method == "permute" and None not in dims and sorted(dims) == list(range(len(dims))):
            return [dims]  # type: ignore[list-item]
        if method in ("transpose", "swapaxes", "swapdims") and len(dims) == 2 and None not in dims:
            i, j = sorted(dims)  # type: ignore[type-var]
            orders = []
            for ndim in range(j + 1, j + 9):  # the rank is unknown: at least j + 1 axes
                order = list(range(ndim))
                order[i], order[j] = order[j], order[i]
                orders.append(order)
            return orders
        if method == "t" and not expr.args:
            return [[1, 0]]
        return None

    def _moves_axes(self, expr: cst.BaseExpression) -> bool:
        """Return True if ``expr`` is a tensor whose axes were moved, directly or through layout-keeping ops."""
        if isinstance(expr, cst.Name):
            return bool(self.scopes[-1].get(expr.value, False))
        if isinstance(expr, cst.Subscript) and any(isinstance(e.slice, cst.Slice) for e in expr.slice):
            return self._moves_axes(expr.value)
        if (isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute)
                and expr.func.attr.value in _KEEPS_LAYOUT and not isinstance(expr.func.value, cst.Name)):
            return self._moves_axes(expr.func.value)
        if (isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute)
                and expr.func.attr.value in _KEEPS_LAYOUT and isinstance(expr.func.value, cst.Name)):
            return bool(self.scopes[-1].get(expr.func.value.value, False))
        if isinstance(expr, cst.Attribute):
            return expr.attr.value in _ATTRS
        if not isinstance(expr, cst.Call):
            return False
        if self.qualname(expr.func) in _FUNCS:
            return True
        func = expr.func
        if not isinstance(func, cst.Attribute) or func.attr.value not in _METHODS:
            return False
        if (self.qualname(func) or "").startswith("numpy."):
            return False
        if func.attr.value == "t" and (expr.args or dotted_name(func.value) == "self"):
            return False  # Tensor.t() takes no argument; `self.t(x)` is a layer named t
        return not (func.attr.value == "permute" and _identity(expr))


def _unpacked_shape(target: cst.BaseExpression,
                    value: cst.BaseExpression) -> Optional[tuple[str, list[Optional[str]], str]]:
    """Return (tensor, axis names, shape as written) for `B, L, H, D = x.shape` (or `x.size()`), else None."""
    if not isinstance(target, (cst.Tuple, cst.List)) or len(target.elements) < 2:
        return None
    if isinstance(value, cst.Attribute) and value.attr.value == "shape":
        tensor = value.value
    elif isinstance(value, cst.Call) and not value.args and isinstance(value.func, cst.Attribute) \
            and value.func.attr.value == "size":
        tensor = value.func.value
    else:
        return None
    if not isinstance(tensor, cst.Name):
        return None
    names: list[Optional[str]] = []
    for element in target.elements:
        if not isinstance(element, cst.Element) or not isinstance(element.value, cst.Name):
            return None  # `*rest` or a nested target: positions unknown
        names.append(None if element.value.value == "_" else element.value.value)
    known = [n for n in names if n is not None]
    if len(set(known)) != len(known) or tensor.value in known:
        return None
    suffix = ".shape" if isinstance(value, cst.Attribute) else ".size()"
    return tensor.value, names, tensor.value + suffix


def _factors(size: cst.BaseExpression) -> list[str]:
    """Return the names multiplied in a size: `L` -> [L], `h * w` -> [h, w] (merged axes); else []."""
    if isinstance(size, cst.Name):
        return [size.value]
    if isinstance(size, cst.BinaryOperation) and isinstance(size.operator, cst.Multiply):
        return _factors(size.left) + _factors(size.right)
    return []


def _permute_dims(call: cst.Call) -> list[Optional[int]]:
    values = [_int(a.value) for a in call.args]
    if len(call.args) == 1 and isinstance(call.args[0].value, (cst.Tuple, cst.List)):
        values = [_int(e.value) for e in call.args[0].value.elements]  # type: ignore[union-attr]
    return values


def _ndim(expr: cst.BaseExpression) -> Optional[int]:
    """The rank of a permuted tensor when ``permute``'s arguments give it."""
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "permute":
        if not any(a.star for a in expr.args):
            return len(_permute_dims(expr)) or None
    return None


def _merges(view: cst.Call, ndim: Optional[int]) -> bool:
    """True if a ``view`` visibly merges axes: ``-1``, a product, fewer sizes than the rank, or at most two sizes.

    Splitting one axis (``view(B, H, L, D)`` of a transposed ``(B*H, L, D)``) is valid on a
    non-contiguous tensor, so a view with three or more plain sizes is given the benefit of the doubt.
    """
    if any(a.star for a in view.args):
        return False
    sizes = [a.value for a in view.args]
    if len(sizes) == 1 and isinstance(sizes[0], (cst.Tuple, cst.List)):
        sizes = [e.value for e in sizes[0].elements]
    minus_one = any(isinstance(s, cst.UnaryOperation) and isinstance(s.operator, cst.Minus) for s in sizes)
    product = any(isinstance(s, cst.BinaryOperation) and isinstance(s.operator, cst.Multiply) for s in sizes)
    return minus_one or product or len(sizes) <= 2 or (ndim is not None and len(sizes) < ndim)


def _may_merge(orders: Optional[list[list[int]]], view: cst.Call) -> bool:
    """True if a view with this many sizes could merge the moved axes without raising.

    A merged run of axes is valid on a permuted tensor only when the run's original axes are
    consecutive and in order (``permute(0, 2, 3, 1).view(1, -1, dim)`` merges axes 2 and 3, which
    `view` accepts). Every break in the order must therefore fall between two of the view's sizes:
    with more breaks than gaps between sizes, the view raises (unless an axis has size 1). A view
    with as many sizes as axes, or more, may split axes as well, so it is given the benefit of the doubt.
    """
    if not orders or any(a.star for a in view.args):
        return False
    sizes = [a.value for a in view.args]
    if len(sizes) == 1 and isinstance(sizes[0], (cst.Tuple, cst.List)):
        sizes = [e.value for e in sizes[0].elements]
    # A product of k sizes merges at least k axes, and `-1` is taken to merge two: a transposed
    # tensor of unknown rank has at least that many axes (`y.transpose(1, 2).view(b, t, -1)`).
    least = len(sizes) + sum(len(_factors(s)) - 1 for s in sizes if len(_factors(s)) > 1) \
        + any(isinstance(s, cst.UnaryOperation) and isinstance(s.operator, cst.Minus) for s in sizes)
    for order in orders:
        if len(orders) > 1 and len(order) < least:
            continue  # a rank this view rules out
        if len(sizes) >= len(order):
            return True
        breaks = sum(1 for a, b in zip(order, order[1:]) if b != a + 1)
        if breaks <= len(sizes) - 1:
            return True
    return False


def _identity(call: cst.Call) -> bool:
    values = [_int(a.value) for a in call.args]
    if len(values) == 1 and isinstance(call.args[0].value, (cst.Tuple, cst.List)):
        values = [_int(e.value) for e in call.args[0].value.elements]  # type: ignore[union-attr]
    return bool(values) and values == list(range(len(values)))


def _int(node: cst.BaseExpression) -> Optional[int]:
    return int(node.value) if isinstance(node, cst.Integer) else None


def _is_dtype_view(rule: Rule, call: cst.Call) -> bool:
    if len(call.args) != 1:
        return False
    if call.args[0].keyword is not None:
        return call.args[0].keyword.value == "dtype"
    value = call.args[0].value
    if isinstance(value, cst.SimpleString):
        return True
    name = (rule.qualname(value) or dotted_name(value) or "").lower()
    last = name.rsplit(".", 1)[-1]
    return name.startswith(("numpy.", "np.")) or last.startswith(_DTYPE_WORDS) or "dtype" in name
