import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nucseg.figures import save_figure  # noqa: E402


def test_save_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "figs", "01_test")
    assert path == tmp_path / "figs" / "01_test.png"
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert save_figure(fig, None, "x") is None
    plt.close(fig)


def test_inline_image_keeps_charts_as_png_and_photos_as_jpeg():
    import numpy as np

    from nucseg.figures import inline_image

    chart, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert inline_image(chart)[0] == "image/png"
    photo, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8))
    png = inline_image(photo, max_png_kb=10_000)
    kind, jpeg = inline_image(photo)
    assert png[0] == "image/png" and kind == "image/jpeg"
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) < len(png[1]) / 2
    plt.close("all")


def test_compact_inline_figures_needs_ipython():
    from nucseg.figures import compact_inline_figures

    assert compact_inline_figures() is False  # plain pytest: no IPython shell, nothing changes


def test_compact_inline_figures_in_an_ipython_shell():
    import numpy as np
    from IPython.core.interactiveshell import InteractiveShell

    from nucseg.figures import compact_inline_figures

    shell = InteractiveShell.instance()
    try:
        assert compact_inline_figures() is True
        chart, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        photo, ax = plt.subplots(figsize=(8, 8))
        ax.imshow(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8))
        shown = {name: shell.display_formatter.format(fig)[0] for name, fig in
                 (("chart", chart), ("photo", photo), ("photo again", photo))}  # fmt: skip
        assert "image/png" in shown["chart"] and "image/jpeg" not in shown["chart"]
        for name in ("photo", "photo again"):
            assert "image/jpeg" in shown[name] and "image/png" not in shown[name], name
    finally:
        InteractiveShell.clear_instance()
        plt.close("all")


def test_a_method_keeps_its_colour_whatever_else_is_plotted():
    from nucseg.figures import method_colours

    few = method_colours(["unet", "classical"])
    many = method_colours(["otsu", "pix2pix", "classical", "mine", "unet", "yours"])
    assert few["unet"] == many["unet"] and few["classical"] == many["classical"]
    assert list(many) == ["otsu", "pix2pix", "classical", "mine", "unet", "yours"]
    assert len(set(many.values())) == 6  # new methods get colours no known method uses
