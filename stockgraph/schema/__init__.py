"""The GraphQL schema: types, inputs, enums, errors and guardrail extensions."""
