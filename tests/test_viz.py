import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from status_scene import status_scene

from nucseg.errors import ShapeMismatchError
from nucseg.taxonomy import classify_errors
from nucseg.viz import (
    GT_CONTOUR,
    HIGHLIGHT,
    PRED_CONTOUR,
    STATUS_COLOURS,
    crop_grid,
    method_panels,
    plot_status_figure,
    status_overlay,
)


@pytest.fixture(autouse=True)
def _agg_backend():
    matplotlib.use("Agg")  # viz imports pyplot lazily, so this takes effect


def _scene():
    return status_scene()


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


def test_method_panels_and_crop_grid():
    image, gt, good, merge = _scene()
    panels = method_panels(image, gt, {"good": good, "merge": merge}, (0, 20, 0, 40),
                           titles={"merge": "merge · AJI 0.4"})  # fmt: skip
    assert [t for _, t in panels] == ["ground truth", "good", "merge · AJI 0.4"]
    assert all(rgb.shape == (20, 40, 3) for rgb, _ in panels)
    assert tuple(panels[0][0][5, 7]) == GT_CONTOUR and tuple(panels[2][0][5, 7]) == PRED_CONTOUR
    assert tuple(panels[2][0][10, 20]) == (200, 200, 200)  # inside the merged prediction
    fig = crop_grid(panels, ncols=2)
    assert len(fig.axes) == 4 and not fig.axes[3].images  # the spare cell stays empty
    assert fig.axes[2].get_title() == "merge · AJI 0.4"
    with pytest.raises(ValueError, match="at least one"):
        crop_grid([], ncols=2)
