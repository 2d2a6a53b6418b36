"""Ped-ChestXray file names: patient ids and labels read from names and class folders."""

from __future__ import annotations

import pytest

from cxr.data.ped_cxr_files import label_from_name, patient_id


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person12_bacteria_31.jpeg", "person12"),
        ("person12_virus_7.jpeg", "person12"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("IM-0656-0001-0002.jpeg", "IM-0656"),
        ("NORMAL2-IM-0381-0001.jpeg", "NORMAL2-IM-0381"),
        ("/data/train/NORMAL/NORMAL2-IM-0381-0002.jpeg", "NORMAL2-IM-0381"),
        ("scan_17.png", "scan_17"),
        ("person12.jpeg", "person12"),  # no kind or number: its own patient, by stem
    ],
)
def test_patient_id(name, patient):
    assert patient_id(name) == patient


def test_label_from_name():
    assert label_from_name("x/NORMAL/IM-0001-0001.jpeg") == 0
    assert label_from_name("x/PNEUMONIA/person1_bacteria_1.jpeg") == 1
    assert label_from_name("x/PNEUMONIA/person1_virus_6.jpeg") == 2
    with pytest.raises(ValueError, match=r"person1_1\.jpeg.*neither"):
        label_from_name("x/PNEUMONIA/person1_1.jpeg")
    with pytest.raises(ValueError, match="OTHER"):
        label_from_name("x/OTHER/a.jpeg")
