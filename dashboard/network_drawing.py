"""Where each shape of the Network page's map goes: geometry only, the template draws it.

A vertical layout, so it reads on a phone as well as beside the table on a desktop: what
reaches the project from outside on top (the ingress controller, anything a policy admits
from elsewhere), the project in the middle with its services, each peered project below it
with arrows both ways. The viewBox is fixed in width; the SVG scales to its column.

Up to ``MAX_NODES`` services of the project (and ``MAX_PEER_NODES`` of each peer) are drawn;
the rest are counted ("and 12 more"). The table beside the map lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from networking.cluster.reachability import Origin, Source
from networking.models import Service
from networking.network_map import Peer, ProjectNetwork, Row

WIDTH = 400
MARGIN = 12
PADDING = 12
GAP = 12
NODE_HEIGHT = 46
HEADER = 50
EXTERNAL_HEIGHT = 52
ARROW_SPACE = 56
MAX_NODES = 30
MAX_PEER_NODES = 8
MAX_EXTERNALS = 3
# Characters that fit a node's width at the map's type size.
NODE_CHARACTERS = 22
TITLE_CHARACTERS = 48
# Type sizes (px) of the map's texts, as app.css sets them.
NAME_SIZE, SMALL_SIZE, TITLE_SIZE = 13, 12, 15
# Sentences of the map's description before it points at the table.
DESCRIBED_ROWS = 12

# A kind as a node says it, short enough to leave room for its tags.
_KINDS: dict[str, str] = {Service.Kind.WEB: "Web service", Service.Kind.PRIVATE: "Private service"}

_TAGS = {
    Origin.INGRESS: "public",
    Origin.ANYWHERE: "open to all",
    Origin.NAMESPACES: "other namespaces",
    Origin.ADDRESSES: "addresses",
}


@dataclass
class Node:
    x: float
    y: float
    width: float
    label: str
    title: str
    kind: str = ""
    tags: list[str] = field(default_factory=list)
    # What to squeeze the name and the kind line to (textLength) when they would overflow.
    label_length: float | None = None
    kind_length: float | None = None
    drifted: bool = False
    open: bool = False
    # "and 12 more": not a service.
    more: bool = False
    height: float = NODE_HEIGHT

    @property
    def text_x(self) -> float:
        return self.x + 10

    @property
    def right_x(self) -> float:
        return self.x + self.width - 10

    @property
    def name_y(self) -> float:
        return self.y + 19

    @property
    def kind_y(self) -> float:
        return self.y + 36


@dataclass
class Box:
    x: float
    y: float
    width: float
    height: float
    title: str
    subtitle: str
    # "project", "peer" or an external source's origin.
    role: str
    caption: str = ""
    caption_drifted: bool = False
    title_length: float | None = None
    subtitle_length: float | None = None
    caption_length: float | None = None
    drifted: bool = False
    nodes: list[Node] = field(default_factory=list)

    @property
    def center(self) -> float:
        return self.x + self.width / 2

    @property
    def text_x(self) -> float:
        return self.x + PADDING

    @property
    def right_x(self) -> float:
        return self.x + self.width - PADDING

    @property
    def title_y(self) -> float:
        return self.y + 22

    @property
    def subtitle_y(self) -> float:
        return self.y + 40

    @property
    def caption_y(self) -> float:
        return self.y + HEADER + 6


@dataclass
class Arrow:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    # "ingress", "peer", "open", "other".
    role: str
    drifted: bool = False

    @property
    def label_x(self) -> float:
        return self.x1 + 6

    @property
    def label_y(self) -> float:
        return (self.y1 + self.y2) / 2 + 4


@dataclass
class Drawing:
    width: int
    height: float
    title: str
    description: str
    boxes: list[Box]
    arrows: list[Arrow]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


# Rough advance widths, in em, of the sans-serif the map is set in: enough to tell when a text
# would run out of its box, which the browser then fits exactly (``textLength``).
_NARROW = frozenset("fijlrt.,:;'!|()[]- ")
_WIDE = frozenset("mwMW@")


def _width(text: str, size: float, *, bold: bool = False) -> float:
    em = sum(
        0.3 if c in _NARROW else 0.95 if c in _WIDE else 0.72 if c.isupper() else 0.6 for c in text
    )
    return em * size * (1.1 if bold else 1.0)


def _fit(text: str, size: float, available: float, *, bold: bool = False) -> float | None:
    """The length to squeeze ``text`` to if it would overflow ``available``; None if it fits."""
    return round(available, 1) if _width(text, size, bold=bold) > available else None


def _fit_box(box: Box) -> Box:
    available = box.width - 2 * PADDING
    box.title_length = _fit(box.title, TITLE_SIZE, available, bold=True)
    box.subtitle_length = _fit(box.subtitle, SMALL_SIZE, available)
    box.caption_length = (
        _fit(f"⚠ {box.caption}", SMALL_SIZE, available, bold=box.caption_drifted)
        if box.caption
        else None
    )
    return box


def _kind_line(node: Node) -> str:
    return " · ".join([node.kind, *node.tags])


def _fit_node(node: Node) -> Node:
    available = node.width - 20
    node.label_length = _fit(
        node.label, NAME_SIZE, available - (14 if node.drifted else 0), bold=True
    )
    node.kind_length = _fit(_kind_line(node), SMALL_SIZE, available)
    return node


def _names(services: list[str], limit: int = 2) -> str:
    if len(services) <= limit:
        return ", ".join(services)
    return f"{len(services)} services"


def draw(network: ProjectNetwork) -> Drawing:
    """The map of ``network``: boxes, nodes and arrows with their coordinates."""
    rows = network.rows()
    own = network.namespace
    into_own = [row for row in rows if row.namespace == own]
    external = _externals(into_own)
    tags = _tags(into_own)
    boxes: list[Box] = []
    arrows: list[Arrow] = []
    y = float(MARGIN)

    if external:
        count = min(len(external), MAX_EXTERNALS)
        width = (WIDTH - 2 * MARGIN - (count - 1) * GAP) / count
        for index, (source, (_, services, drifted)) in enumerate(list(external.items())[:count]):
            x = MARGIN + index * (width + GAP)
            more = len(external) - count if index == count - 1 else 0
            boxes.append(
                Box(
                    x=x,
                    y=y,
                    width=width,
                    height=EXTERNAL_HEIGHT,
                    title=_cut(_external_title(source), int(width / 6)),
                    subtitle=_cut(
                        _external_subtitle(source)
                        if not more
                        else f"and {more} more, in the table",
                        int(width / 4.5),
                    ),
                    role=str(source.origin),
                    drifted=drifted,
                )
            )
            arrows.append(
                Arrow(
                    x1=x + width / 2,
                    y1=y + EXTERNAL_HEIGHT,
                    x2=x + width / 2,
                    y2=y + EXTERNAL_HEIGHT + ARROW_SPACE - 4,
                    label=f"to {_names(services)}",
                    role={Origin.INGRESS: "ingress", Origin.ANYWHERE: "open"}.get(
                        source.origin, "other"
                    ),
                    drifted=drifted,
                )
            )
        y += EXTERNAL_HEIGHT + ARROW_SPACE

    project = _project_box(network, y, into_own, tags)
    boxes.append(project)
    y += project.height

    for peer in network.peers:
        down = [row for row in rows if row.namespace == peer.project.namespace]
        up = [r for r in into_own if r.source.namespace == peer.project.namespace]
        box = _peer_box(network, peer, y + ARROW_SPACE)
        arrows.extend(_peer_arrows(network, peer, project, box, down, up))
        boxes.append(box)
        y = box.y + box.height

    for box in boxes:
        _fit_box(box)
        for node in box.nodes:
            _fit_node(node)
    return Drawing(
        width=WIDTH,
        height=y + MARGIN,
        title=f"Who can reach whom in {network.project.name}",
        description=_description(network, rows),
        boxes=boxes,
        arrows=arrows,
    )


def _externals(rows: list[Row]) -> dict[Source, tuple[str, list[str], bool]]:
    """Each source outside the project and its peers: its words, whom it reaches, drift."""
    found: dict[Source, tuple[str, list[str], bool]] = {}
    for row in rows:
        if row.source.origin == Origin.PROJECT:
            continue
        text, services, drifted = found.get(row.source, (row.source_text, [], False))
        found[row.source] = (text, sorted({*services, *row.services}), drifted or row.drifted)
    # The ingress controller first; what is open to all last, where it stands out.
    order = [Origin.INGRESS, Origin.NAMESPACES, Origin.ADDRESSES, Origin.ANYWHERE]
    return dict(sorted(found.items(), key=lambda item: order.index(item[0].origin)))


def _external_title(source: Source) -> str:
    match source.origin:
        case Origin.INGRESS:
            return "Ingress controller"
        case Origin.ANYWHERE:
            return "Anyone"
        case Origin.ADDRESSES:
            return "Addresses"
    return "Other namespaces"


def _external_subtitle(source: Source) -> str:
    pods = f", {source.pods}" if source.pods else ""
    match source.origin:
        case Origin.INGRESS:
            return f"namespace {source.namespace}{pods}"
        case Origin.ANYWHERE:
            return "no policy limits who connects"
    return f"{source.detail}{pods}"


def _tags(rows: list[Row]) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for row in rows:
        tag = _TAGS.get(row.source.origin)
        if tag is None:
            continue
        for service in row.services:
            if tag not in tags.setdefault(service, []):
                tags[service].append(tag)
    return tags


def _grid(
    services: list[Service],
    x: float,
    y: float,
    width: float,
    limit: int,
    decorate: dict[str, tuple[list[str], bool]],
) -> tuple[list[Node], float]:
    """Nodes two to a row from (x, y); the height they take."""
    columns = 2
    node_width = (width - (columns - 1) * GAP) / columns
    shown = services if len(services) <= limit else services[: limit - 1]
    nodes = []
    for index, service in enumerate(shown):
        row, column = divmod(index, columns)
        tags, drifted = decorate.get(service.name, ([], False))
        nodes.append(
            Node(
                x=x + column * (node_width + GAP),
                y=y + row * (NODE_HEIGHT + GAP),
                width=node_width,
                label=_cut(service.name, NODE_CHARACTERS),
                title=f"{service.name} ({service.get_kind_display()})",
                kind=_KINDS.get(service.kind, str(service.get_kind_display())),
                tags=tags,
                drifted=drifted,
                open="open to all" in tags,
            )
        )
    if len(shown) < len(services):
        row, column = divmod(len(shown), columns)
        nodes.append(
            Node(
                x=x + column * (node_width + GAP),
                y=y + row * (NODE_HEIGHT + GAP),
                width=node_width,
                label=f"and {len(services) - len(shown)} more",
                title="Every service is in the table",
                kind="listed in the table",
                more=True,
            )
        )
    rows = (len(nodes) + columns - 1) // columns
    return nodes, rows * NODE_HEIGHT + max(rows - 1, 0) * GAP


def _project_box(
    network: ProjectNetwork, y: float, rows: list[Row], tags: dict[str, list[str]]
) -> Box:
    project = network.project
    x, width = float(MARGIN), float(WIDTH - 2 * MARGIN)
    same = [
        row
        for row in rows
        if row.source.origin == Origin.PROJECT and row.source.namespace == network.namespace
    ]
    if not network.services:
        caption = "No services yet"
    elif any(row.source.services is None and row.every for row in same) or (
        len(network.services) == 1 and same
    ):
        policies = sorted({row.reason.policy for row in same if row.reason.policy})
        caption = f"Each service here reaches every other · {', '.join(policies)}"
    elif same:
        caption = "Some services here reach others: see the table"
    else:
        caption = "No service here may reach another"
    caption_drifted = any(network.policy_drifted(row.reason.policy) for row in same)
    decorate = {
        service.name: (tags.get(service.name, []), network.service_drifted(service.name))
        for service in network.services
    }
    nodes, height = _grid(
        network.services, x + PADDING, y + HEADER + 18, width - 2 * PADDING, MAX_NODES, decorate
    )
    count = len(network.services)
    return Box(
        x=x,
        y=y,
        width=width,
        height=HEADER + 18 + height + PADDING + (0 if nodes else 8),
        title=_cut(project.name, TITLE_CHARACTERS),
        subtitle=f"{network.namespace} · {count} service{'s' if count != 1 else ''}",
        role="project",
        caption=_cut(caption, 60),
        caption_drifted=caption_drifted,
        # The isolation between projects is the box's edge: it is drawn differing too.
        drifted=network.namespace_drifted or caption_drifted,
        nodes=nodes,
    )


def _peer_box(network: ProjectNetwork, peer: Peer, y: float) -> Box:
    x, width = float(MARGIN), float(WIDTH - 2 * MARGIN)
    nodes, height = _grid(
        peer.services, x + PADDING, y + HEADER, width - 2 * PADDING, MAX_PEER_NODES, {}
    )
    organization = peer.project.organization.name
    status = peer.peering.get_status_display()
    return Box(
        x=x,
        y=y,
        width=width,
        height=HEADER + height + PADDING + (0 if nodes else 8),
        title=_cut(f"{peer.project.name} ({organization})", TITLE_CHARACTERS),
        subtitle=_cut(f"peered · {peer.project.namespace} · {status}", 56),
        role="peer",
        nodes=nodes,
    )


def _peer_arrows(
    network: ProjectNetwork,
    peer: Peer,
    project: Box,
    box: Box,
    down: list[Row],
    up: list[Row],
) -> list[Arrow]:
    """Project → peer on the left, peer → project on the right, each only if it holds."""
    arrows = []
    top, bottom = project.y + project.height, box.y
    if down:
        services = sorted({service for row in down for service in row.services})
        every = len(services) == len(peer.services) and len(services) > 1
        arrows.append(
            Arrow(
                x1=project.center - 60,
                y1=top,
                x2=project.center - 60,
                y2=bottom - 2,
                label="to every service" if every else f"to {_names(services)}",
                role="peer",
            )
        )
    if up:
        services = sorted({service for row in up for service in row.services})
        every = len(services) == len(network.services) and len(services) > 1
        arrows.append(
            Arrow(
                x1=project.center + 60,
                y1=bottom,
                x2=project.center + 60,
                y2=top + 2,
                label="to every service" if every else f"to {_names(services)}",
                role="peer",
                drifted=any(row.drifted for row in up),
            )
        )
    return arrows


def _description(network: ProjectNetwork, rows: list[Row]) -> str:
    """The map in sentences, for screen readers; the table beside it has every row."""
    sentences = []
    for row in rows[:DESCRIBED_ROWS]:
        services = (
            f"every service in {row.project_name}"
            if row.every
            else f"{', '.join(row.services)} in {row.project_name}"
        )
        sentences.append(
            f"{row.source_text[:1].upper()}{row.source_text[1:]} can reach {services}."
        )
    if len(rows) > DESCRIBED_ROWS:
        sentences.append(f"{len(rows) - DESCRIBED_ROWS} more in the table.")
    if not rows:
        sentences.append(f"{network.project.name} has no services yet.")
    if network.drift_texts:
        sentences.append("The cluster differs from this map right now; the worker is repairing it.")
    return " ".join(sentences)
