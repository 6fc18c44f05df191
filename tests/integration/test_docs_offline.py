"""/docs and /redoc load nothing from outside the server."""

from __future__ import annotations

import re

import httpx
import pytest

# Where a page names something it loads: src/href attributes, ReDoc's spec-url,
# Swagger UI's `url:` option.
REFERENCES = re.compile(r"""(?:\b(?:src|href|spec-url)="([^"]*)"|\burl:\s*'([^']*)')""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_references_only_local_urls_that_answer(http: httpx.AsyncClient, page: str) -> None:
    response = await http.get(page)
    assert response.status_code == 200
    html = response.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    urls = [a or b for a, b in REFERENCES.findall(html)]
    assert "/openapi.json" in urls
    assert any(url.endswith(".js") for url in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await http.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url


async def test_swagger_ui_is_a_version_that_renders_openapi_3_1(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.1")
    bundle = (await http.get("/docs/assets/swagger-ui-bundle.js")).text
    assert re.search(r'PACKAGE_VERSION:"5\.\d+\.\d+"', bundle)  # OpenAPI 3.1 needs Swagger UI 5
