"""Side-by-side comparison views, set through MRML nodes (layout, slice composite, table view nodes).

``source | synthetic (+ difference overlay) | reference`` in linked axial slice views with the metrics table
below. Everything but :func:`resetViewsInApplication` works on a bare scene, so it is tested without Qt.
"""

from __future__ import annotations

import slicer

# Custom layout ids: clear of Slicer's built-in ones; one id per variant so switching always refreshes.
COMPARISON_LAYOUT_BASE_ID = 3871
VIEW_NAMES = ("Red", "Yellow", "Green")
VIEW_COLORS = {"Red": "#F34A33", "Yellow": "#EDD54C", "Green": "#6EB04B"}
TABLE_VIEW_TAG = "TableView1"
DIFFERENCE_OPACITY = 0.5


def layoutDescription(viewCount: int, withTable: bool) -> str:
    """Slicer layout XML: ``viewCount`` axial slice views in a row, optionally a table view below."""
    views = "".join(
        f'<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
        f'<property name="orientation" action="default">Axial</property>'
        f'<property name="viewlabel" action="default">{name[0]}</property>'
        f'<property name="viewcolor" action="default">{VIEW_COLORS[name]}</property></view></item>'
        for name in VIEW_NAMES[:viewCount]
    )
    row = f'<layout type="horizontal">{views}</layout>'
    if not withTable:
        return row
    table = f'<view class="vtkMRMLTableViewNode" singletontag="{TABLE_VIEW_TAG}"><property name="viewlabel" action="default">T</property></view>'
    return f'<layout type="vertical" split="true"><item splitSize="700">{row}</item><item splitSize="250">{table}</item></layout>'


def _singleton(scene: slicer.vtkMRMLScene, className: str, tag: str, layoutName: str | None = None):
    """The scene's singleton node of ``className`` with ``tag``; created when the application has not yet."""
    for index in range(scene.GetNumberOfNodesByClass(className)):
        node = scene.GetNthNodeByClass(index, className)
        if node.GetSingletonTag() == tag or (layoutName and node.GetLayoutName() == layoutName):
            return node
    node = scene.CreateNodeByClass(className)
    node.SetSingletonTag(tag)
    if layoutName:
        node.SetLayoutName(layoutName)
    return scene.AddNode(node)


def setSliceLayers(scene, viewName: str, background, foreground=None, foregroundOpacity: float = 0.0) -> None:
    """Show ``background`` (and a semi-transparent ``foreground``) in slice view ``viewName``, linked, axial."""
    composite = _singleton(scene, "vtkMRMLSliceCompositeNode", viewName, viewName)
    composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
    composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
    composite.SetForegroundOpacity(foregroundOpacity if foreground is not None else 0.0)
    composite.SetLinkedControl(True)
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        sliceNode = scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
        if sliceNode.GetLayoutName() == viewName:
            sliceNode.SetOrientation("Axial")


def showComparison(scene, sourceNode, outputs, referenceNode=None) -> None:
    """Arrange the views for a translation's outputs (``TranslationOutputs``).

    Views: source | synthetic with the difference map as a semi-transparent foreground | the reference (or
    the uncertainty map when there is no reference); the metrics table below when there is one.
    """
    third = referenceNode if referenceNode is not None else outputs.uncertaintyNode
    layers = [(sourceNode, None), (outputs.syntheticNode, outputs.differenceNode)]
    if third is not None:
        layers.append((third, None))
    withTable = outputs.metricsTableNode is not None
    layoutId = COMPARISON_LAYOUT_BASE_ID + 2 * len(layers) + int(withTable)

    layoutNode = _singleton(scene, "vtkMRMLLayoutNode", "vtkMRMLLayoutNode")
    description = layoutDescription(len(layers), withTable)
    if layoutNode.IsLayoutDescription(layoutId):
        layoutNode.SetLayoutDescription(layoutId, description)
    else:
        layoutNode.AddLayoutDescription(layoutId, description)
    layoutNode.SetViewArrangement(layoutId)

    for viewName, (background, foreground) in zip(VIEW_NAMES, layers):
        setSliceLayers(scene, viewName, background, foreground, DIFFERENCE_OPACITY)
    if withTable:
        tableView = _singleton(scene, "vtkMRMLTableViewNode", TABLE_VIEW_TAG, TABLE_VIEW_TAG)
        tableView.SetTableNodeID(outputs.metricsTableNode.GetID())


def resetViewsInApplication() -> None:
    """Fit the slice views to the shown volumes (needs the desktop application's layout manager)."""
    import slicer.util

    slicer.util.resetSliceViews()
