"""Page-number pagination for every API list (its own module: DRF imports it while
loading its generic views, so it must not import them back)."""

from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200
