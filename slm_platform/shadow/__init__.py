"""Shadow traffic judged: the gateway's challenger pairs read back and scored (`shadow_report[v]`)."""
