"""The Django app label `engines`, kept only for its migrations.

Node and NodeHeartbeat were first models of an app named `engines`; their migrations
(0001-0005) are recorded under that label in every database made before they moved to
`nodes`, and other apps' migrations depend on them by that name. This package keeps the
label and those migrations, with no models, so that the `engines` package itself is a
Django-free library of drivers. Its last migration hands the models' state to `nodes`
(the tables stay where they are).
"""
