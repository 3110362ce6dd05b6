def markdown_section(result):
    return ""
