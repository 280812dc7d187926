"""The parts of the HTML status page; `connector.faces.report_html` assembles them."""
