import ipywidgets
import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from nucseg.errors import LayoutError, ShapeMismatchError
from nucseg.taxonomy import classify_errors
from nucseg.viz import (
    GT_CONTOUR,
    HIGHLIGHT,
    PRED_CONTOUR,
    STATUS_COLOURS,
    ContourInspector,
    InspectorState,
    plot_status_figure,
    status_overlay,
)


@pytest.fixture(autouse=True)
def _agg_backend():
    matplotlib.use("Agg")  # viz imports pyplot lazily, so this takes effect


def _scene():
    """A 40x50 image: GT nuclei 1, 2 (side by side) and 3; two predictions of it."""
    image = np.full((40, 50, 3), 200, np.uint8)
    gt = np.zeros((40, 50), np.int32)
    gt[5:15, 5:15], gt[5:15, 20:30], gt[25:35, 5:15] = 1, 2, 3
    good = gt.copy()
    merge = np.zeros_like(gt)
    merge[5:15, 5:30] = 7  # merges 1 and 2; 3 missed
    merge[25:35, 35:45] = 9  # false positive
    return image, gt, good, merge


def test_status_overlay_fills_and_contours():
    image, gt, _, merge = _scene()
    out = status_overlay(image, gt, merge)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 200).all()  # input untouched
    assert tuple(out[5, 7]) == PRED_CONTOUR  # pred outline drawn over the GT outline
    assert tuple(out[25, 7]) == GT_CONTOUR  # missed nucleus: GT outline only
    # Interior of the missed nucleus is tinted orange, the false positive blue.
    expected = np.round(0.65 * 200 + 0.35 * np.array(STATUS_COLOURS["missed"]))
    assert np.abs(out[30, 10].astype(float) - expected).max() <= 1
    assert np.argmax(out[30, 40]) == 2 and (out[20, 40] == 200).all()


def test_status_overlay_toggles_region_and_highlight():
    image, gt, _, merge = _scene()
    t = classify_errors(gt, merge)
    plain = status_overlay(image, gt, merge, t, show_gt=False, show_pred=False, fill=False)
    assert (plain == image).all()
    no_gt = status_overlay(image, gt, merge, t, show_gt=False, fill=False)
    assert (no_gt[25, 7] == 200).all() and tuple(no_gt[5, 7]) == PRED_CONTOUR
    crop = status_overlay(image, gt, merge, t, region=(20, 38, -5, 18))
    assert crop.shape == (18, 18, 3)
    assert (crop == status_overlay(image, gt, merge, t)[20:38, 0:18]).all()
    boxed = status_overlay(image, gt, merge, t, highlight=3, fill=False, show_gt=False)
    assert tuple(boxed[23, 10]) == HIGHLIGHT and tuple(boxed[30, 3]) == HIGHLIGHT
    unknown = status_overlay(image, gt, merge, t, highlight=99)  # absent id: no box
    assert (unknown == status_overlay(image, gt, merge, t)).all()


def test_status_overlay_errors():
    image, gt, good, merge = _scene()
    with pytest.raises(ShapeMismatchError):
        status_overlay(image, gt[:30], merge[:30])
    with pytest.raises(ValueError, match="uint8"):
        status_overlay(image.astype(np.float32), gt, merge)
    with pytest.raises(ValueError, match="empty"):
        status_overlay(image, gt, merge, region=(10, 10, 0, 5))
    with pytest.raises(ValueError, match="taxonomy"):
        status_overlay(image, gt, merge, classify_errors(gt, good))


def test_plot_status_figure_has_legend_and_coordinates():
    image, gt, _, merge = _scene()
    fig = plot_status_figure(image, gt, merge, title="demo", region=(0, 20, 0, 40))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "merged (2 GT / 1 pred)" in labels and "false (1 pred)" in labels
    assert "GT contour" in labels and ax.get_title() == "demo"
    assert ax.images[0].get_extent() == [-0.5, 39.5, 19.5, -0.5]
    fig2 = plot_status_figure(image, gt, merge, ax=ax, fill=False, show_pred=False)
    assert fig2 is fig
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["GT contour"]


def _inspector():
    image, gt, good, merge = _scene()
    small = np.zeros((30, 30), np.int32)
    small[10:20, 10:20] = 5
    images = {"A": image, "B": np.full((30, 30, 3), 90, np.uint8), "C": image}
    truth = {"A": gt, "B": small, "C": gt}
    preds = {"good": {"A": good, "B": small, "C": good}, "merge": {"A": merge, "B": small}}
    return ContourInspector(images, truth, preds, organs={"A": "breast"}, display_size=64)


def test_inspector_drives_state_render_and_info():
    insp = _inspector()
    assert insp.skipped == ["C"]  # no "merge" prediction for C
    assert [label for label, _ in insp.image.options] == ["A (breast)", "B"]
    assert isinstance(insp.widget, ipywidgets.VBox)
    assert insp.view.value[:8] == b"\x89PNG\r\n\x1a\n"
    s0, r0 = insp.state, insp.render()
    assert s0 == InspectorState("A", "good", True, True, True, (0, 40), (0, 50), 0)
    assert r0.shape == (40, 50, 3)
    assert "AJI 1.000" in insp.info.value

    insp.method.value = "merge"
    r1 = insp.render()
    assert insp.state.method == "merge" and not (r1 == r0).all()
    assert "merge events 1" in insp.info.value and "false 1" in insp.info.value

    insp.show_gt.value = False
    r2 = insp.render()
    assert not insp.state.show_gt and not (r2 == r1).all()

    png_before = insp.view.value
    insp.rows.value, insp.cols.value = (20, 38), (0, 18)
    assert insp.state.rows == (20, 38) and insp.render().shape == (18, 18, 3)
    assert insp.view.value != png_before

    insp.nucleus.value = 1
    assert insp.state.nucleus == 1
    text = insp.info_text()
    assert "GT nucleus 1: merged" in text and "best IoU 0.400" in text
    assert "with prediction 7 (merged)" in text and "prediction 7" in insp.info.value
    insp.nucleus.value = 3
    assert "GT nucleus 3: missed · best IoU 0.000 (no overlap)" in insp.info_text()

    insp.zoom_to_nucleus(margin=4)
    assert insp.state.rows == (21, 39) and insp.state.cols == (1, 19)
    insp.nucleus.value = 0
    insp.zoom_button.click()  # nothing selected: full view
    assert insp.region() == (0, 40, 0, 50)

    insp.image.value = "B"  # other size: sliders follow, nucleus list is rebuilt
    assert insp.state.rows == (0, 30) and insp.render().shape == (30, 30, 3)
    assert [v for _, v in insp.nucleus.options] == [0, 5]


def test_a_new_image_drops_the_selected_nucleus_and_zooms_out():
    image, gt, good, _ = _scene()
    moved = np.roll(gt, 20, axis=1)  # same size, same ids, other places
    truth = {"A": gt, "D": moved}
    insp = ContourInspector({"A": image, "D": image}, truth, {"good": {"A": good, "D": moved}})
    insp.nucleus.value = 1
    insp.zoom_to_nucleus(margin=2)
    assert insp.region() == (3, 17, 3, 17)
    insp.image.value = "D"  # ids are per image: nucleus 1 of A is another nucleus in D
    assert insp.state.nucleus == 0 and "GT nucleus" not in insp.info_text()
    assert insp.region() == (0, 40, 0, 50)


def test_inspector_keeps_nucleus_across_methods_and_makes_figures():
    insp = _inspector()
    insp.nucleus.value = 2
    insp.method.value = "merge"
    assert insp.state.nucleus == 2 and ("2 (merged)", 2) in insp.nucleus.options
    fig = insp.static_figure()
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "A · merge"
    bundle = insp._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_inspector_rejects_unusable_inputs():
    image, gt, good, _ = _scene()
    with pytest.raises(ValueError, match="at least one"):
        ContourInspector({"A": image}, {"A": gt}, {})
    with pytest.raises(LayoutError, match="good"):
        ContourInspector({"A": image}, {"A": gt}, {"good": {"Z": good}})
