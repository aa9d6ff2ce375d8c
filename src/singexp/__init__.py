"""singexp: DeepJSCC, SING-Zero and SING-INN for semantic image communication."""

from singexp.resolvers import register as _register_resolvers

_register_resolvers()
