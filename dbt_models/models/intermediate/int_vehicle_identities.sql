-- Every vehicle identity seen in any source, with its fleet vehicle_id from the seed map.
-- A source adds an import CTE of its vehicles and one `union all` line at the marker:
-- (source, source_vehicle_id, source_name).
with avl_trips as (
    select * from {{ ref('stg_avl__trips') }}
),

kt1_assets as (
    select * from {{ ref('stg_kt1__assets') }}
),

metrotec_vehicles as (
    select * from {{ ref('stg_metrotec__vehicles') }}
),

autopi_trips as (
    select * from {{ ref('stg_autopi__trips') }}
),

identity_map as (
    select * from {{ ref('vehicle_map') }}
),

seen as (
    select distinct 'avl' as source, source_vehicle_id, source_vehicle_id as source_name
    from avl_trips
    union all select distinct 'kt1' as source, asset_id, asset_name from kt1_assets
    union all select distinct 'metrotec' as source, source_vehicle_id, display_name from metrotec_vehicles
    union all
    select distinct
        'autopi' as source,
        source_vehicle_id,
        coalesce('AutoPi ' || cast(autopi_vehicle_id as varchar), source_vehicle_id) as source_name
    from autopi_trips
    -- sources: union all select distinct '<source>', <vehicle id>, <vehicle name> from <import>
),

final as (
    select
        coalesce(m.vehicle_id, seen.source || ':' || seen.source_vehicle_id) as vehicle_id,
        coalesce(m.display_name, seen.source_name) as display_name,
        seen.source,
        seen.source_vehicle_id
    from seen
    left join identity_map as m
        on m.source = seen.source and m.source_vehicle_id = seen.source_vehicle_id
)

select * from final
