{#- on-run-end: a build that built every model it selected, with no failing test, ends with one
    marker commit (message 'fleet facts build'). Readers (pipelines.facts.connect) open the
    catalog as of the newest marker, so they never see a build half done; a failed or killed
    build leaves none, and readers keep the previous build. The row records what was built. -#}
{% macro mark_facts_build(results) %}
    {%- if not execute or flags.WHICH not in ['build', 'run', 'seed'] -%}
        {{ return('') }}
    {%- endif -%}
    {%- set models = [] -%}
    {%- set bad = [] -%}
    {%- for result in results -%}
        {%- if result.status in ['error', 'fail', 'skipped', 'runtime error'] -%}
            {%- do bad.append(result.node.name) -%}
        {%- elif result.node.resource_type in ['model', 'seed'] -%}
            {%- do models.append(result.node.name) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if bad or not models -%}
        {{ return('') }}
    {%- endif -%}
    {%- set info = tojson({'invocation_id': invocation_id, 'models': models | length}) -%}
    create schema if not exists {{ target.database }}.fleet_build;
    create table if not exists {{ target.database }}.fleet_build.builds (
        invocation_id varchar,
        finished_at timestamptz,
        models integer
    );
    begin transaction;
    call {{ target.database }}.set_commit_message(
        'fleet-pipelines', '{{ var("fleet_build_message", "fleet facts build") }}',
        extra_info => '{{ info }}'
    );
    insert into {{ target.database }}.fleet_build.builds
    values ('{{ invocation_id }}', now(), {{ models | length }});
    commit;
{%- endmacro %}
