"""Reports: the guided draft and the SOS, evidence files, and opening a sealed report."""
