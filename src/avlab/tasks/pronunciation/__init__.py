"""L2 pronunciation assessment: phone recognition and mispronunciation detection."""
