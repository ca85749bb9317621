"""Not a page: the Train page's data-source panel for a folder path or an uploaded zip, checked
without decoding images (bnviz.forms.scan_folder)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from bnviz import forms
from bnviz.data import DataError
from bnviz.forms import FolderScan
from pages import common

ss = st.session_state


def folder_or_zip(source: str) -> tuple[FolderScan | None, str, bool]:
    """The widgets for a "folder" or "zip" source; returns (scan, error, blocked): blocked while
    nothing is entered yet, error a one-line reason the data cannot be used."""
    if source == "folder":
        st.text_input(
            "Folder path (one sub-folder per class, or train/ and test/ with those)",
            key="train_folder",
            placeholder="/data/intel-images/seg_train",
            persist_state="session",
        )
        if not ss.train_folder.strip():
            return None, "", True
        try:
            return common.scan(ss.train_folder.strip()), "", False
        except DataError as exc:
            return None, str(exc), False
    if source != "zip":
        return None, "", False
    upload = st.file_uploader("Zip of class sub-folders", type=["zip"], key="train_zip")
    if upload is None:
        return None, "", True
    done = ss.get("train_zip_result", ("", "", ""))
    if done[0] != upload.file_id or (done[1] and not Path(done[1]).is_dir()):  # extract each upload once, again if bnviz gc removed it
        try:
            ss.train_zip_result = (upload.file_id, forms.extract_upload(common.home_path(), upload.name, upload.getvalue()).path, "")
        except DataError as exc:
            ss.train_zip_result = (upload.file_id, "", str(exc))
    _, path, error = ss.train_zip_result
    return (None, error, False) if error else (common.scan(path), "", False)
