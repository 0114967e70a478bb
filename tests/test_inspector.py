import io

import ipywidgets
import matplotlib
import numpy as np
import PIL.Image
import pytest
from matplotlib.figure import Figure
from status_scene import status_scene

from nucseg.errors import LayoutError
from nucseg.inspector import ContourInspector, InspectorState, encode_view, legend_html
from nucseg.taxonomy import classify_errors


@pytest.fixture(autouse=True)
def _agg_backend():
    matplotlib.use("Agg")


def _scene():
    return status_scene()


def _inspector():
    image, gt, good, merge = _scene()
    small = np.zeros((30, 30), np.int32)
    small[10:20, 10:20] = 5
    images = {"A": image, "B": np.full((30, 30, 3), 90, np.uint8), "C": image}
    truth = {"A": gt, "B": small, "C": gt}
    preds = {"good": {"A": good, "B": small, "C": good}, "merge": {"A": merge, "B": small}}
    return ContourInspector(images, truth, preds, organs={"A": "breast"}, display_size=64)


def _size(data: bytes) -> tuple[int, int]:
    return PIL.Image.open(io.BytesIO(data)).size


def test_inspector_drives_state_render_and_info():
    insp = _inspector()
    assert insp.skipped == ["C"]  # no "merge" prediction for C
    assert [label for label, _ in insp.image.options] == ["A (breast)", "B"]
    assert isinstance(insp.widget, ipywidgets.VBox)
    assert insp.view.value[:8] == b"\x89PNG\r\n\x1a\n"
    s0, r0 = insp.state, insp.render()
    assert s0 == InspectorState("A", "good", True, True, True, (0, 40), (0, 50), 0, "all")
    assert r0.shape == (40, 50, 3)
    assert "AJI 1.000" in insp.info.value

    insp.method.value = "merge"
    r1 = insp.render()
    assert insp.state.method == "merge" and not (r1 == r0).all()
    assert "merge events 1" in insp.info.value and "false 1" in insp.info.value
    assert "merged (2 GT / 1 pred)" in insp.legend.value

    insp.show_gt.value = False
    r2 = insp.render()
    assert not insp.state.show_gt and not (r2 == r1).all()

    png_before = insp.view.value
    insp.rows.value, insp.cols.value = (20, 38), (0, 18)
    assert insp.state.rows == (20, 38) and insp.render().shape == (18, 18, 3)
    assert insp.view.value != png_before
    assert _size(insp.view.value) == (54, 54)  # 18 px enlarged 3x, the largest within 64
    assert (insp.view.layout.width, insp.view.layout.height) == ("54px", "54px")

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


def test_contour_checkboxes_keep_the_status_fills():
    insp = _inspector()
    insp.method.value = "merge"
    insp.show_gt.value = insp.show_pred.value = False
    view = insp.render()
    assert (view[30, 10] != 200).any()  # the missed nucleus is still tinted
    insp.colour_status.value = False
    assert (insp.render() == 200).all()
    assert "missed" not in insp.legend.value and "GT contour" in insp.legend.value


def test_the_status_filter_lists_false_detections_as_negative_ids():
    insp = _inspector()
    insp.method.value = "merge"
    insp.status_filter.value = "false"
    assert insp.nucleus.options == (("none", 0), ("pred 9 (false)", -9))
    insp.nucleus.value = -9
    assert "predicted nucleus 9: false · best IoU 0.000 (no overlap)" in insp.info_text()
    insp.zoom_to_nucleus(margin=2)
    assert insp.region() == (23, 37, 33, 47)
    insp.status_filter.value = "merged"  # the selection is not in the new list: dropped
    assert [v for _, v in insp.nucleus.options] == [0, 1, 2] and insp.state.nucleus == 0
    insp.nucleus.value = 2
    insp.status_filter.value = "all"  # still listed: kept
    assert insp.state.nucleus == 2 and "with prediction 7 (merged)" in insp.info_text()


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
    assert insp.state.nucleus == 2 and ("GT 2 (merged)", 2) in insp.nucleus.options
    fig = insp.static_figure()
    assert isinstance(fig, Figure) and fig.axes[0].get_title().startswith("A · merge: AJI 0.")
    bundle = insp._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_inspector_rejects_unusable_inputs():
    image, gt, good, _ = _scene()
    with pytest.raises(ValueError, match="at least one"):
        ContourInspector({"A": image}, {"A": gt}, {})
    with pytest.raises(LayoutError, match="good"):
        ContourInspector({"A": image}, {"A": gt}, {"good": {"Z": good}})


def test_views_are_sent_at_a_whole_number_scale():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (50, 20, 3), dtype=np.uint8)
    up = encode_view(small, 600)
    assert up.format == "png" and up.scale == 12 and (up.width, up.height) == (240, 600)
    decoded = np.asarray(PIL.Image.open(io.BytesIO(up.data)))
    assert (decoded[::12, ::12] == small).all()  # lossless, nearest neighbour
    whole = rng.integers(0, 255, (1000, 1000, 3), dtype=np.uint8)
    down = encode_view(whole, 720)
    assert down.format == "jpeg" and down.scale == 0.5 and _size(down.data) == (500, 500)
    assert encode_view(whole, 1000).format == "png"
    with pytest.raises(ValueError, match="display_size"):
        encode_view(small, 0)


def test_the_legend_names_every_status_present_with_its_colour():
    _, gt, _, merge = _scene()
    text = legend_html(classify_errors(gt, merge))
    for word in ("merged (2 GT / 1 pred)", "missed (1 GT)", "false (1 pred)", "GT contour"):
        assert word in text
    assert "rgb(0, 114, 178)" in text  # the colour of "false"
