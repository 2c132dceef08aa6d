"""What an operation costs: priced from its document before it runs, and from its answer after.

The rules follow the IBM GraphQL cost directive's model:

- every object (or interface or union) a field returns costs 1, scalars and enums cost 0;
- a list multiplies the cost of one of its items by its size, read from the arguments that
  bound it (``first`` of a connection sizes its ``edges``; ``skus`` times warehouses sizes
  ``inventoryLevels``; ``representations`` sizes ``_entities``) or, where nothing bounds
  it, from what is known of the tenant (its number of warehouses) or an assumed size;
- a field that reads WMS instances live costs :data:`UPSTREAM_CALL_COST` per upstream call
  it implies (``inventoryLevels(maxAge:)``: one per connected warehouse asked);
- every mutation field costs :data:`MUTATION_COST` on top of its selection;
- introspection (``__schema``, ``__type``, ``__typename``) is free.

The requested cost is computed from the validated document and the variables, before any
resolver runs, so an operation over the maximum touches neither the database nor a WMS.
The actual cost counts what the answer holds: the objects in ``data``, the upstream calls
really made and the mutations run.

Example::

    >>> from graphql import build_schema, parse
    >>> schema = build_schema("type Row { name: String } type Query { rows(first: Int): [Row] }")
    >>> analyse(schema, parse("{ rows(first: 3) { name } }"), None, {}, Sizes(warehouses=1))
    Analysis(requested=3, mutations=0)
    >>> analysis = analyse(schema, parse("{ rows { name } }"), None, {}, Sizes(warehouses=1))
    >>> data = {"rows": [{"name": "a"}, {"name": "b"}]}
    >>> actual_cost(data, analysis.shape, upstream_calls=0, mutations=0)
    2
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    is_composite_type,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values

from stockgraph.schema.documents import operation_of

OBJECT_COST = 1
MUTATION_COST = 10
UPSTREAM_CALL_COST = 10
"""One call to one WMS instance: the scarcest thing a request can spend."""
ASSUMED_LIST_SIZE = 5
"""The size of a list nothing bounds (an item's units, a kit's components)."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """What the analysis needs to know of the caller's world to size unbounded lists."""

    warehouses: int | None
    """The tenant's warehouses: the size of per-warehouse lists. None until it is known:
    pricing a document that needs it then raises :class:`WarehouseCountNeeded`, so that
    only such documents pay for reading it."""
    live_instances: int = 0
    """The tenant's warehouses with a connected WMS: the most a live read can call."""
    page_size: int = 20
    """``first`` when a connection is asked without it."""
    max_list_size: int = 250
    """The longest list argument accepted (longer ones are refused as bad input)."""
    max_page_size: int = 100
    """The largest ``first`` accepted."""


Shape = dict[str, "Shape"]


@dataclass(frozen=True, slots=True)
class Analysis:
    """The price of one operation, before it runs."""

    requested: int
    mutations: int
    """Mutation fields it runs; each costs :data:`MUTATION_COST` again in the actual cost."""
    shape: Shape = field(default_factory=dict, repr=False, compare=False)
    """Where the answer's objects are (response keys of object fields, nested), so that
    :func:`actual_cost` visits only those and not every scalar."""


class WarehouseCountNeeded(LookupError):
    """The document has a per-warehouse list and :attr:`Sizes.warehouses` was not given."""


def _tenant_warehouses(sizes: Sizes) -> int:
    if sizes.warehouses is None:
        raise WarehouseCountNeeded
    return sizes.warehouses


Arguments = Mapping[str, Any]
ListSize = Callable[[Arguments, Sizes], int]


def _count(arguments: Arguments, name: str, sizes: Sizes) -> int:
    # Sizes are capped where the argument guardrails refuse larger ones: such a request
    # fails with BAD_USER_INPUT, which says more than a cost error would.
    value = arguments.get(name)
    if not isinstance(value, Sequence) or isinstance(value, str):
        return 0
    return min(len(value), sizes.max_list_size)


def _warehouses_asked(arguments: Arguments, sizes: Sizes) -> int:
    return _count(arguments, "warehouseIds", sizes) or _tenant_warehouses(sizes)


_LIST_SIZES: dict[tuple[str, str], ListSize] = {
    ("Query", "inventoryLevels"): lambda a, s: _count(a, "skus", s) * _warehouses_asked(a, s),
    ("Query", "availability"): lambda a, s: _count(a, "skus", s),
    ("Query", "_entities"): lambda a, s: _count(a, "representations", s),
    ("Query", "syncHealth"): lambda _a, s: _tenant_warehouses(s),
    ("SkuAvailability", "warehouses"): lambda _a, s: _tenant_warehouses(s),
}
"""Lists sized by their arguments or by the tenant, beyond connections' ``first``."""


def _live_calls(type_name: str, field_name: str, arguments: Arguments, sizes: Sizes) -> int:
    if (type_name, field_name) != ("Query", "inventoryLevels"):
        return 0
    if arguments.get("maxAge") is None or arguments.get("asOf") is not None:
        return 0
    return min(_warehouses_asked(arguments, sizes), sizes.live_instances)


def analyse(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    sizes: Sizes,
) -> Analysis:
    """The requested cost of the operation ``operation_name`` of a validated ``document``.

    An operation that cannot be found costs nothing: execution refuses it anyway.
    """
    operation = operation_of(document, operation_name)
    if operation is None:
        return Analysis(0, 0)
    root = schema.get_root_type(operation.operation)
    if root is None:
        return Analysis(0, 0)
    coerced = get_variable_values(
        schema, operation.variable_definitions or (), dict(variables or {}), max_errors=1
    )
    if not isinstance(coerced, VariableValues):
        return Analysis(0, 0)  # execution refuses the variables before anything runs
    walker = _Walker(schema, document, coerced, sizes)
    shape: Shape = {}
    requested = walker.selection_cost(root, [operation.selection_set], None, shape)
    mutations = 0
    if operation.operation is OperationType.MUTATION:
        mutations = len(walker.collect(root, [operation.selection_set]))
    return Analysis(requested + mutations * MUTATION_COST, mutations, shape)


def actual_cost(data: object, shape: Shape, *, upstream_calls: int, mutations: int) -> int:
    """What an answer cost: its objects, the WMS calls made and the mutations run.

    ``shape`` (from :attr:`Analysis.shape`) says where in ``data`` the objects are.
    """
    objects = _objects_in(data, shape) if isinstance(data, dict) else 0
    return objects + upstream_calls * UPSTREAM_CALL_COST + mutations * MUTATION_COST


def _objects_in(parent: dict[str, Any], shape: Shape) -> int:
    """Objects below ``parent`` (not counting it) where ``shape`` says they are."""
    count = 0
    for key, inner in shape.items():
        value = parent.get(key)
        if isinstance(value, dict):
            count += OBJECT_COST + (_objects_in(value, inner) if inner else 0)
        elif isinstance(value, list):
            count += _objects_of_list(value, inner)
    return count


def _objects_of_list(values: list[Any], shape: Shape) -> int:
    count = 0
    for value in values:
        if isinstance(value, dict):
            count += OBJECT_COST + (_objects_in(value, shape) if shape else 0)
        elif isinstance(value, list):
            count += _objects_of_list(value, shape)
    return count


class _Walker:
    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode, variables: VariableValues, sizes: Sizes
    ) -> None:
        self._schema = schema
        self._variables = variables
        self._sizes = sizes
        self._fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }

    def collect(
        self, parent: Any, selection_sets: Sequence[SelectionSetNode]
    ) -> dict[str, list[tuple[Any, FieldNode]]]:
        """Fields by response key, each with the type it is selected on (fragments merged)."""
        fields: dict[str, list[tuple[Any, FieldNode]]] = {}
        for node_type, node in self._fields(parent, selection_sets, set()):
            key = node.alias.value if node.alias else node.name.value
            fields.setdefault(key, []).append((node_type, node))
        return fields

    def _fields(
        self, parent: Any, selection_sets: Sequence[SelectionSetNode], seen: set[str]
    ) -> Iterator[tuple[Any, FieldNode]]:
        for selection_set in selection_sets:
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    yield parent, selection
                elif isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    on = self._schema.get_type(condition.name.value) if condition else parent
                    yield from self._fields(on or parent, [selection.selection_set], seen)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self._fragments.get(name)
                    if fragment is None or name in seen:
                        continue
                    on = self._schema.get_type(fragment.type_condition.name.value)
                    yield from self._fields(on or parent, [fragment.selection_set], seen | {name})

    def selection_cost(
        self,
        parent: Any,
        selection_sets: Sequence[SelectionSetNode],
        slice_size: int | None,
        shape: Shape,
    ) -> int:
        """The cost of a selection; notes in ``shape`` where its objects will be."""
        total = 0
        for key, selected in self.collect(parent, selection_sets).items():
            # The same response key selected on several types of a union or interface: the
            # dearest reading is the one that counts.
            total += max(self._field_cost(t, f, slice_size, shape, key) for t, f in selected)
        return total

    def _field_cost(
        self, parent: Any, node: FieldNode, slice_size: int | None, shape: Shape, key: str
    ) -> int:
        name = node.name.value
        fields = getattr(parent, "fields", None)  # object and interface types; not unions
        if name.startswith("__") or fields is None:
            return 0  # introspection is free; a union's members are priced in fragments
        definition = fields.get(name)
        if definition is None:
            return 0
        return self._priced(parent.name, name, definition, node, slice_size, shape, key)

    def _priced(
        self,
        type_name: str,
        name: str,
        definition: GraphQLField,
        node: FieldNode,
        slice_size: int | None,
        shape: Shape,
        key: str,
    ) -> int:
        arguments = self._arguments(definition, node)
        upstream = _live_calls(type_name, name, arguments, self._sizes) * UPSTREAM_CALL_COST
        named = get_named_type(definition.type)
        if not is_composite_type(named):
            return upstream
        child_slice = None
        if "first" in definition.args:
            first = arguments.get("first")
            child_slice = self._first(first) if isinstance(first, int) else self._sizes.page_size
        item = OBJECT_COST
        inner = shape.setdefault(key, {})
        if node.selection_set is not None:
            item += self.selection_cost(named, [node.selection_set], child_slice, inner)
        if not _is_list(definition.type):
            return item + upstream
        return item * self._list_size(type_name, name, arguments, slice_size) + upstream

    def _list_size(
        self, type_name: str, name: str, arguments: Arguments, slice_size: int | None
    ) -> int:
        rule = _LIST_SIZES.get((type_name, name))
        if rule is not None:
            return rule(arguments, self._sizes)
        first = arguments.get("first")
        if isinstance(first, int):
            return self._first(first)  # a list sliced by its own argument
        if slice_size is not None and name in ("edges", "nodes"):
            return slice_size  # the list a connection's ``first`` slices
        return ASSUMED_LIST_SIZE

    def _first(self, first: int) -> int:
        return max(0, min(first, self._sizes.max_page_size))

    def _arguments(self, definition: GraphQLField, node: FieldNode) -> dict[str, Any]:
        try:
            return get_argument_values(definition, node, self._variables)
        except (GraphQLError, TypeError, ValueError):
            return {}  # a value execution refuses: the field will not run


def _is_list(type_: Any) -> bool:
    while isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


__all__ = [
    "ASSUMED_LIST_SIZE",
    "MUTATION_COST",
    "OBJECT_COST",
    "UPSTREAM_CALL_COST",
    "Analysis",
    "Sizes",
    "WarehouseCountNeeded",
    "actual_cost",
    "analyse",
]
