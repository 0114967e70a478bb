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
