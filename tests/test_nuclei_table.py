import numpy as np
import pandas as pd

from nucseg.data.images import write_label_map
from nucseg.nuclei_table import nuclei_table, write_nuclei_csv


def test_nuclei_table_areas_and_centroids(tmp_path):
    labels = np.zeros((30, 30), np.int32)
    labels[0:10, 0:10] = 4
    labels[20:24, 10:20] = 9
    table = nuclei_table(labels)
    assert list(table.nucleus_id) == [4, 9]
    assert list(table.area) == [100, 40]
    assert table.loc[1, "centroid_row"] == 21.5
    write_label_map(tmp_path / "img.tif", labels)
    csv = write_nuclei_csv(tmp_path / "img.tif")
    assert csv.name == "img_nuclei.csv"
    assert len(pd.read_csv(csv)) == 2
